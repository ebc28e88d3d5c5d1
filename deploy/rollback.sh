#!/usr/bin/env bash
# Emergency rollback of fedsync, after the seed's runbook (9.2):
#
#   1. pause new synchronizations  POST /api/v1/control/pause on every region's edge
#   2. drain in-flight requests    wait (30 s by default)
#   3. revert to previous version  kubectl rollout undo of every fedsync workload
#                                  (statestore first, then merge, authn, healthmonitor,
#                                  then the regional hubs), and wait for each rollout
#   4. restore from backup         with --restore-backup ID only: the statestore's
#                                  leader verifies the cold backup (digest, sealed
#                                  chunks, documents) and installs it on every
#                                  replica; `fedctl backup list` names the backups
#   5. resume operations           POST /api/v1/control/resume on every region's edge
#
# Usage: deploy/rollback.sh [--dry-run] [options]
#   --dry-run              print every step and command, call nothing
#   --namespace NS         namespace of fedsync (default: $FEDSYNC_NAMESPACE or fedsync)
#   --context CTX          kubectl context (default: the current one)
#   --control-url URL      base URL of a region's edge; repeat once per region
#                          (default: $FEDSYNC_CONTROL_URLS, space- or comma-separated)
#   --drain SECONDS        drain wait (default: $FEDSYNC_DRAIN_SECONDS or 30)
#   --workload KIND/NAME   roll back only these (repeatable; default: every
#                          Deployment and StatefulSet labelled app.kubernetes.io/part-of=fedsync)
#   --rollout-timeout DUR  how long to wait for each rollout (default: 5m)
#   --restore-backup ID    step 4: restore this backup (every change committed
#                          after it is lost); without it step 4 is skipped
#
# `rollout undo` returns each workload to its previous revision. That is the
# previous release when a release updates every fedsync workload together (one
# image tag for all six, as deploy/overlays/prod sets them); after a release that
# changed only some workloads, name those with --workload.
#
# The pause and resume calls need a federation_admin (L4) token, read from
# $FEDSYNC_CONTROL_TOKEN (never from the command line, never printed), e.g.
#   FEDSYNC_CONTROL_TOKEN=$(curl -s -d grant_type=client_credentials -d client_id=admin \
#     -d client_secret=... https://na.fedsync.example.com/oauth2/token | jq -r .access_token)
#
# If pausing or a rollback fails, the script stops and exits non-zero, leaving
# the federation paused for an operator: resuming on a half-rolled-back mesh is a
# decision to take by hand (POST /api/v1/control/resume).
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
CURL=${CURL:-curl}
namespace=${FEDSYNC_NAMESPACE:-fedsync}
context=
drain=${FEDSYNC_DRAIN_SECONDS:-30}
rollout_timeout=5m
restore_backup=
dry_run=false
urls=()
workloads=()
# Split $FEDSYNC_CONTROL_URLS on spaces and commas.
env_urls=${FEDSYNC_CONTROL_URLS:-}
for u in ${env_urls//,/ }; do urls+=("$u"); done

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
die() { echo "rollback: $*" >&2; exit 1; }

cli_urls=()
while [[ $# -gt 0 ]]; do
	case "$1" in
	--dry-run) dry_run=true ;;
	--namespace) namespace=${2:?--namespace needs a value}; shift ;;
	--context) context=${2:?--context needs a value}; shift ;;
	--control-url) cli_urls+=("${2:?--control-url needs a value}"); shift ;;
	--drain) drain=${2:?--drain needs a value}; shift ;;
	--workload) workloads+=("${2:?--workload needs a value}"); shift ;;
	--rollout-timeout) rollout_timeout=${2:?--rollout-timeout needs a value}; shift ;;
	--restore-backup) restore_backup=${2:?--restore-backup needs a backup id}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
	shift
done
if [[ ${#cli_urls[@]} -gt 0 ]]; then urls=("${cli_urls[@]}"); fi
[[ ${#urls[@]} -gt 0 ]] || die "no control URL: pass --control-url https://<region edge> (once per region) or set FEDSYNC_CONTROL_URLS"
[[ $drain =~ ^[0-9]+$ ]] || die "--drain must be whole seconds, got $drain"
[[ -z $restore_backup || $restore_backup =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "--restore-backup: $restore_backup is not a backup id"
if ! $dry_run && [[ -z ${FEDSYNC_CONTROL_TOKEN:-} ]]; then
	die "FEDSYNC_CONTROL_TOKEN is not set: the control API needs a federation_admin (L4) bearer token"
fi

kube=("$KUBECTL")
[[ -n $context ]] && kube+=(--context "$context")
kube+=(--namespace "$namespace")

step() { echo "==> $*"; }

# run prints a command; outside a dry run it also runs it.
run() {
	if $dry_run; then
		echo "[dry-run] $*"
	else
		echo "+ $*"
		"$@"
	fi
}

# control POSTs to /api/v1/control/$1 on every region's edge. The token goes to
# curl on stdin, so it shows neither in the process list nor in this output.
control() {
	local action=$1 url
	for url in "${urls[@]}"; do
		url="${url%/}/api/v1/control/$action"
		if $dry_run; then
			echo "[dry-run] POST $url (Authorization: Bearer \$FEDSYNC_CONTROL_TOKEN)"
			continue
		fi
		echo "+ POST $url"
		printf 'Authorization: Bearer %s\n' "$FEDSYNC_CONTROL_TOKEN" |
			"$CURL" --silent --show-error --fail --max-time 15 --retry 2 \
				-X POST -H @- -H 'Content-Length: 0' "$url" >/dev/null ||
			die "POST $url failed"
	done
}

# The rollback order: the system of record first, the edges last.
rank() {
	case "${1#*/}" in
	statestore*) echo 1 ;;
	merge*) echo 2 ;;
	authn*) echo 3 ;;
	healthmonitor*) echo 4 ;;
	validation*) echo 5 ;;
	broadcaster*) echo 6 ;;
	*) echo 7 ;;
	esac
}

$dry_run && echo "rollback: DRY RUN: nothing is called"
if [[ ${#workloads[@]} -eq 0 ]]; then
	list=("${kube[@]}" get deployments,statefulsets -l app.kubernetes.io/part-of=fedsync -o name)
	if $dry_run; then
		echo "[dry-run] ${list[*]}"
		echo "[dry-run] (each workload found is rolled back below)"
		workloads=(statefulset.apps/statestore deployment.apps/merge statefulset.apps/authn deployment.apps/healthmonitor
			"deployment.apps/validation-<region>" "deployment.apps/broadcaster-<region>")
	else
		mapfile -t workloads < <("${list[@]}")
		[[ ${#workloads[@]} -gt 0 ]] || die "no fedsync workloads in namespace $namespace"
	fi
fi
mapfile -t workloads < <(for w in "${workloads[@]}"; do echo "$(rank "$w") $w"; done | sort -k1,1n -k2 | cut -d' ' -f2-)

echo "rollback: namespace $namespace${context:+, context $context}; edges: ${urls[*]}"
echo "rollback: workloads: ${workloads[*]}"

step "1/5 pause new synchronizations"
control pause

step "2/5 drain in-flight requests (${drain}s)"
if $dry_run; then echo "[dry-run] sleep $drain"; else sleep "$drain"; fi

step "3/5 revert to the previous version"
for w in "${workloads[@]}"; do
	run "${kube[@]}" rollout undo "$w" || die "rollout undo $w failed; the federation stays paused"
done
for w in "${workloads[@]}"; do
	run "${kube[@]}" rollout status "$w" --timeout "$rollout_timeout" ||
		die "$w did not become ready; the federation stays paused"
done

# restore asks the statestore, through the first region's edge (it is
# federation-wide), to restore backup $1; the leader verifies it whole first.
restore() {
	local url="${urls[0]%/}/api/v1/admin/backups/$1/restore"
	if $dry_run; then
		echo "[dry-run] POST $url (Authorization: Bearer \$FEDSYNC_CONTROL_TOKEN)"
		return
	fi
	echo "+ POST $url"
	printf 'Authorization: Bearer %s\n' "$FEDSYNC_CONTROL_TOKEN" |
		"$CURL" --silent --show-error --fail-with-body --max-time 900 \
			-X POST -H @- -H 'Content-Length: 0' "$url" ||
		die "restoring backup $1 failed; the federation stays paused"
	echo
}

if [[ -n $restore_backup ]]; then
	step "4/5 restore from backup $restore_backup"
	restore "$restore_backup"
else
	step "4/5 restore from backup: skipped (no --restore-backup)"
fi

step "5/5 resume operations"
control resume

echo "rollback: complete. Please investigate the root cause."
