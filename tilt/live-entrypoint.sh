#!/bin/sh
# Entrypoint of the Tilt dev image (tilt/Dockerfile.dev): runs the service and
# restarts it when Tilt's live_update has synced a new binary.
#
# live_update (tilt/live_restart/Tiltfile) copies the host-built binary to
# $LIVE_DIR/fedsync-service and then touches $LIVE_DIR/.restart. $LIVE_DIR is on
# the pod's /tmp emptyDir: writable under a read-only root filesystem, and kept
# across container restarts, so a crashed service comes back with the newest
# binary. SIGTERM and SIGINT are passed to the service, whose graceful shutdown
# (NOT_SERVING, deregister, drain) works as in the production image.
set -u
LIVE_DIR=${FEDSYNC_LIVE_DIR:-/tmp/fedsync-live}
IMAGE_BIN=${FEDSYNC_IMAGE_BIN:-/usr/local/bin/fedsync-service}
POLL=${FEDSYNC_LIVE_POLL:-1}
child=

binary() {
	if [ -x "$LIVE_DIR/fedsync-service" ]; then
		echo "$LIVE_DIR/fedsync-service"
	else
		echo "$IMAGE_BIN"
	fi
}

start() {
	"$(binary)" "$@" &
	child=$!
}

stop() {
	kill -TERM "$child" 2>/dev/null
	wait "$child"
}

trap 'stop; exit $?' TERM INT

start "$@"
while :; do
	if [ -e "$LIVE_DIR/.restart" ]; then
		rm -f "$LIVE_DIR/.restart"
		echo "fedsync-live: restarting with $(binary)" >&2
		stop
		start "$@"
	fi
	if ! kill -0 "$child" 2>/dev/null; then
		wait "$child"
		code=$?
		echo "fedsync-live: service exited with status $code" >&2
		exit "$code"
	fi
	sleep "$POLL" &
	wait $! 2>/dev/null
done
