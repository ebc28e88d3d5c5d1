# fedsync developer commands. `make help` lists them.
SHELL := /bin/bash
BIN := .fedsync/bin
SERVICES := authn validation merge statestore broadcaster healthmonitor
# Every package of every module in go.work.
PKGS := $(shell go list -m -f '{{.Dir}}/...' 2>/dev/null | sed "s|^$(CURDIR)/|./|")
KAFKA_ADDR := 127.0.0.1:19093
# go.work and every go.mod name the patched toolchain (toolchain go1.26.11:
# the standard library fixes govulncheck asks for); auto fetches it from the
# module proxy when the installed Go is older. Set GOTOOLCHAIN to override.
export GOTOOLCHAIN ?= auto

.PHONY: help build run jaeger vulncheck test-python test test-deploy test-rules test-integration proto proto-check lint kafka-start kafka-stop clean fedbench bench bench-full bench-deps bench-prune

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## Build every service and the devstack into .fedsync/bin.
	@mkdir -p $(BIN)
	go build -o $(BIN)/ $(foreach s,$(SERVICES),./services/$(s)/cmd/$(s)) ./tools/cmd/devstack ./tools/cmd/fedctl

run: build $(if $(OTEL),jaeger) ## Run the whole mesh with 53 simulated agents (AGENTS=N to change; OTEL=1 adds Jaeger and tracing); Ctrl-C stops it.
	@exec $(BIN)/devstack -bin $(BIN) -state .fedsync/dev $(if $(OTEL),-otel)

jaeger: ## Build Jaeger v2 (pinned in tools/jaeger) into .fedsync/bin, for make run OTEL=1 and the trace test.
	@mkdir -p $(BIN)
	cd tools/jaeger && GOWORK=off go build -o ../../$(BIN)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

vulncheck: ## govulncheck (pinned in tools/vulncheck) over every shipped module, against vuln.go.dev or, offline, the pinned golang.org/x/vulndb.
	scripts/vulncheck.sh

test: test-deploy ## Unit, service and end-to-end tests on the embedded broker, and the offline deploy checks (Go only).
	go vet $(PKGS)
	go test -count=1 -timeout 20m $(PKGS)
	cd tools/fedbench && GOWORK=off go vet ./... && GOWORK=off go test -count=1 ./...

test-python: ## The Python SDK (sdk/python): pip install into a fresh venv, mypy --strict, pytest against a mesh it starts (Python 3.10+).
	scripts/test-python-sdk.sh

test-deploy: ## Offline checks of deploy/, tilt/, Tiltfile and rollback.sh (no cluster, Docker or Tilt).
	cd deploy/verify && GOWORK=off go vet ./... && GOWORK=off go test -count=1 -timeout 10m ./...

test-rules: ## The Prometheus alert rules in deploy/prometheus, checked and unit-tested with promtool (Debian package prometheus).
	promtool check rules deploy/prometheus/fedsync-rules.yaml
	cd deploy/prometheus && promtool test rules fedsync-rules.test.yaml

test-integration: ## Every Kafka-facing test against a real Apache Kafka 4.4 broker (needs Java 17, Maven).
	scripts/kafka.sh start
	FEDSYNC_TEST_KAFKA=$(KAFKA_ADDR) go test -count=1 -timeout 30m ./libs/kafkabus/... ./services/statestore/... ./tests/...; \
	  status=$$?; scripts/kafka.sh stop; exit $$status

proto: ## Regenerate the Go code of proto/ with buf (pinned in tools/protogen).
	@mkdir -p $(BIN)
	cd tools/protogen && GOWORK=off go build -o ../../$(BIN)/ github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	cd proto && PATH=$(CURDIR)/$(BIN):$$PATH buf lint && PATH=$(CURDIR)/$(BIN):$$PATH buf generate

proto-check: proto ## Fail when the committed generated code differs from what proto/ generates.
	@git diff --exit-code -- proto/ || { echo "generated code in proto/ is stale: run make proto and commit"; exit 1; }

lint: ## gofmt, go vet and staticcheck (pinned in tools/protogen).
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet $(PKGS)
	cd tools/fedbench && GOWORK=off go vet ./...
	@mkdir -p $(BIN)
	cd tools/protogen && GOWORK=off go build -o ../../$(BIN)/ honnef.co/go/tools/cmd/staticcheck
	$(BIN)/staticcheck $(PKGS)
	cd tools/fedbench && GOWORK=off ../../$(BIN)/staticcheck ./...
	cd deploy/verify && GOWORK=off ../../$(BIN)/staticcheck ./...

fedbench: ## Build the benchmark tool (tools/fedbench, its own module, not in go.work) into .fedsync/bin.
	@mkdir -p $(BIN)
	cd tools/fedbench && GOWORK=off go build -o ../../$(BIN)/fedbench .

bench-deps: ## Install the baselines fedbench compares with: Debian etcd-server and nats-server (root).
	scripts/bench-deps.sh

bench: build fedbench ## steady + conflict on fedsync, etcd and NATS side by side (under 3 min); results in bench/results/.
	$(BIN)/fedbench -scenario steady,conflict -warmup 2s -duration 8s

bench-full: build fedbench ## Every preset (steady, max, fanout, conflict, large, growing, overload) at full length, with a perf CPU profile of fedsync.
	$(BIN)/fedbench -scenario all -perf

bench-prune: ## Keep in bench/results/ the latest run per scenario and the runs docs/performance.md cites; dry run unless DELETE=1.
	scripts/bench-prune.sh $(if $(DELETE),--delete)

kafka-start: ## Start the real Kafka 4.4 broker on 127.0.0.1:19093.
	scripts/kafka.sh start

kafka-stop: ## Stop it.
	scripts/kafka.sh stop

clean: ## Remove binaries and dev state (.fedsync/).
	rm -rf .fedsync
