#!/usr/bin/env bash
# govulncheck over every Go module fedsync ships or tests with, against the Go
# vulnerability database. govulncheck and the database are both pinned in
# tools/vulncheck/go.mod: when https://vuln.go.dev answers, it is used (the
# newest data); otherwise the database is built offline from the OSV files of
# the pinned golang.org/x/vulndb module (served by the Go module proxy) with
# vulndb's own indexdb. Bump that pin to refresh the offline data:
#   cd tools/vulncheck && GOWORK=off go get -tool golang.org/x/vulndb/cmd/indexdb@master
# FEDSYNC_VULNDB=<url> forces a database. Exits non-zero when code calls a
# vulnerable function (govulncheck's exit status 3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.fedsync/bin"
mkdir -p "$BIN"
(cd tools/vulncheck && GOWORK=off go build -o "$BIN/" golang.org/x/vuln/cmd/govulncheck golang.org/x/vulndb/cmd/indexdb)

db="${FEDSYNC_VULNDB:-}"
if [ -z "$db" ]; then
  if curl -sf --max-time 5 -o /dev/null https://vuln.go.dev/index/db.json 2>/dev/null; then
    db=https://vuln.go.dev
  else
    ver=$(cd tools/vulncheck && GOWORK=off go list -m -f '{{.Version}}' golang.org/x/vulndb)
    out="$PWD/.fedsync/vulndb/$ver"
    if [ ! -f "$out/index/db.json" ]; then
      (cd tools/vulncheck && GOWORK=off go mod download golang.org/x/vulndb)
      src=$(cd tools/vulncheck && GOWORK=off go list -m -f '{{.Dir}}' golang.org/x/vulndb)
      echo "vuln.go.dev is unreachable: building the database from golang.org/x/vulndb@$ver ($(ls "$src/data/osv" | wc -l) reports)"
      rm -rf "$out" && "$BIN/indexdb" -vulns "$src/data/osv" -out "$out"
    fi
    db="file://$out"
  fi
fi
echo "vulnerability database: $db"

# The modules fedsync ships or runs in CI; the pinned build tools
# (tools/protogen, tools/jaeger, tools/vulncheck) are not part of the product.
mods="libs proto sdk/go tools tests tools/fedbench deploy/verify"
for s in authn validation merge statestore broadcaster healthmonitor; do mods="$mods services/$s"; done
failed=""
for m in $mods; do
  echo "== govulncheck $m"
  set +e
  (cd "$m" && GOWORK=off "$BIN/govulncheck" -db "$db" ./...)
  rc=$?
  set -e
  case $rc in
    0) ;;
    3) failed="$failed $m" ;;
    *) echo "govulncheck failed on $m (exit $rc)"; exit $rc ;;
  esac
done
if [ -n "$failed" ]; then
  echo "vulnerable code paths in:$failed"
  exit 3
fi
echo "no vulnerable code paths in: $mods"
