#!/usr/bin/env bash
# The Python SDK's checks: install sdk/python with its test extras into a fresh
# virtual environment (.fedsync/pyvenv), mypy --strict, then pytest against a
# real mesh this script starts (make run's devstack without simulated agents,
# on its own ports) and stops. The last test kills region na's hub.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.fedsync/pyvenv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
"$venv/bin/pip" install -q "./sdk/python[test]"
echo "== mypy --strict"
(cd sdk/python && "../../$venv/bin/mypy" --strict src examples)

echo "== a mesh for the suite"
make build >/dev/null
state=$(mktemp -d /tmp/fedsync-pysdk-XXXXXX)
.fedsync/bin/devstack -bin .fedsync/bin -state "$state" -agents 0 \
  -edge-na 127.0.0.1:18080 -edge-eu 127.0.0.1:18090 -kafka-port 19192 >"$state/devstack.log" 2>&1 &
pid=$!
stop() {
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$state"
}
trap stop EXIT
for i in $(seq 1 120); do
  if curl -sf -o /dev/null http://127.0.0.1:18080/api/v1/sync/health && curl -sf -o /dev/null http://127.0.0.1:18090/api/v1/sync/health; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the mesh did not start:"; tail -30 "$state/devstack.log"; exit 1
  fi
  sleep 1
done

echo "== pytest (against the mesh)"
status=0
(cd sdk/python && FEDSYNC_EDGE_NA=http://127.0.0.1:18080 FEDSYNC_EDGE_EU=http://127.0.0.1:18090 \
  FEDSYNC_CLIENTS="$state/clients.json" FEDSYNC_FAILOVER=1 "../../$venv/bin/pytest" -q -s -p no:cacheprovider tests) || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- devstack log (last 40 lines)"; tail -40 "$state/devstack.log"
fi
exit $status
