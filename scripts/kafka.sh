#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, combined broker+controller)
# on 127.0.0.1 for tests, from Maven Central jars (see tools/kafka/pom.xml).
#
# Usage: scripts/kafka.sh start|stop|status|restart
#
#   start   fetch the jars if needed, format the storage on first start, start the
#           broker in the background and wait until it serves the Kafka protocol.
#           Prints the bootstrap address (e.g. 127.0.0.1:19093) on stdout.
#           A no-op (still printing the address) when the broker already runs.
#   stop    SIGTERM, wait up to 20 s, then SIGKILL. Idempotent.
#   status  prints whether it runs; exit 0 when running, 3 when not.
#
# Environment:
#   KAFKA_PORT             client (PLAINTEXT) port          default 19093
#   KAFKA_CONTROLLER_PORT  KRaft controller port            default 19094
#   KAFKA_DIR              state dir (data/, logs/, pid)    default <repo>/.fedsync/kafka
#   KAFKA_LIBS             jar dir                          default <repo>/.fedsync/kafka/libs
#   KAFKA_HEAP_OPTS        JVM heap options                 default -Xms128m -Xmx512m
#   KAFKA_JVM_OPTS         extra JVM options                default -XX:TieredStopAtLevel=1
#                          (C1 only: about half the start time, less JIT CPU; fine for tests)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness    default 60
#   JAVA_HOME / JAVA       Java 17+ to use
#
# Logs: $KAFKA_DIR/logs/server.log (broker), kafka.out (JVM stdout/stderr),
#       format.log (storage format), fetch.log (maven).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
POM="$ROOT/tools/kafka/pom.xml"
LOG4J_CONF="$ROOT/tools/kafka/log4j2.properties"

PORT=${KAFKA_PORT:-19093}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19094}
HOST=127.0.0.1
KAFKA_DIR=${KAFKA_DIR:-$ROOT/.fedsync/kafka}
LIBS=${KAFKA_LIBS:-$ROOT/.fedsync/kafka/libs}
DATA="$KAFKA_DIR/data"
LOGS="$KAFKA_DIR/logs"
CONF="$KAFKA_DIR/server.properties"
PIDFILE="$KAFKA_DIR/kafka.pid"
START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
STOP_TIMEOUT=20
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
JVM_OPTS=${KAFKA_JVM_OPTS--XX:TieredStopAtLevel=1}
if [[ -n ${JAVA:-} ]]; then
  :
elif [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA=java
fi

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Keep the repo-local state out of git without touching the repo's .gitignore.
ignore_fedsync_dir() {
  case "$KAFKA_DIR/" in
    "$ROOT/.fedsync/"*) ;;
    *) case "$LIBS/" in "$ROOT/.fedsync/"*) ;; *) return 0 ;; esac ;;
  esac
  mkdir -p "$ROOT/.fedsync"
  [[ -f $ROOT/.fedsync/.gitignore ]] || printf '*\n' >"$ROOT/.fedsync/.gitignore"
}

# ---------------------------------------------------------------------------
# process helpers

# Prints the pid from the pid file if that process is alive and is our broker.
running_pid() {
  [[ -f $PIDFILE ]] || return 1
  local pid
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the process must be kafka.Kafka with our config.
  if [[ -r /proc/$pid/cmdline ]]; then
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    [[ $cmd == *kafka.Kafka*"$CONF"* ]] || return 1
  fi
  printf '%s\n' "$pid"
}

# kill_broker PID: SIGTERM, wait up to STOP_TIMEOUT s, then SIGKILL.
kill_broker() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "broker (pid $pid) did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "broker (pid $pid) still alive after SIGKILL"
  return 1
}

# tcp_open PORT: true when something accepts TCP connections on HOST:PORT.
tcp_open() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# kafka_probe PORT: sends a Kafka ApiVersions v0 request and checks that the
# reply carries our correlation id, i.e. a Kafka broker is serving requests.
kafka_probe() {
  local reply
  reply=$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    # size=10 | api_key=18 (ApiVersions) | api_version=0 | correlation_id=0x2a2a2a2a | client_id=null
    printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x2a\x2a\x2a\x2a\xff\xff" >&3
    head -c 10 <&3 | od -An -v -tx1 | tr -d " \n"
  ' "$HOST" "$1" 2>/dev/null) || return 1
  # reply: size(4) correlation_id(4) error_code(2)
  [[ ${reply:8:8} == 2a2a2a2a && ${reply:16:4} == 0000 ]]
}

# show_logs [OUT_OFFSET LOG_OFFSET]: last 50 lines of kafka.out and server.log
# written after the given byte offsets (i.e. by the current start attempt).
show_logs() {
  local offs=("${1:-0}" "${2:-0}") files=("$LOGS/kafka.out" "$LOGS/server.log") i f off
  for i in 0 1; do
    f=${files[$i]} off=${offs[$i]}
    [[ -f $f ]] || continue
    (($(stat -c %s "$f") < off)) && off=0 # rolled over
    (($(stat -c %s "$f") > off)) || continue
    printf '==== last 50 lines of %s ====\n' "$f" >&2
    tail -c +"$((off + 1))" "$f" | tail -n 50 >&2
  done
}

# ---------------------------------------------------------------------------
# setup

fetch_jars() {
  local stamp="$LIBS/.fetched" want
  want=$(sha256sum "$POM" | cut -d' ' -f1)
  if [[ -f $stamp && $(<"$stamp") == "$want" ]] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found: needed to fetch the Kafka jars"
  log "fetching Kafka jars from Maven into $LIBS"
  mkdir -p "$LOGS" "$(dirname "$LIBS")"
  local tmp
  tmp=$(mktemp -d "$(dirname "$LIBS")/.libs.XXXXXX")
  chmod 755 "$tmp"
  if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$LOGS/fetch.log" 2>&1; then
    rm -rf "$tmp"
    tail -n 50 "$LOGS/fetch.log" >&2
    die "maven failed to fetch the Kafka jars (see $LOGS/fetch.log)"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "maven fetched no kafka jar"; }
  printf '%s\n' "$want" >"$tmp/.fetched"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

write_config() {
  mkdir -p "$DATA" "$LOGS"
  cat >"$CONF.tmp" <<EOF
# Generated by scripts/kafka.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA

num.network.threads=2
num.io.threads=4
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=8
group.initial.rebalance.delay.ms=0

log.retention.hours=24
log.segment.bytes=67108864
EOF
  mv "$CONF.tmp" "$CONF"
}

gen_cluster_id() {
  # Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id != -* ]] && break
  done
  printf '%s\n' "$id"
}

format_storage() {
  [[ -f $DATA/meta.properties ]] && return 0
  local id
  id=$(gen_cluster_id)
  log "formatting $DATA (cluster id $id)"
  # shellcheck disable=SC2086
  if ! "$JAVA" $HEAP_OPTS $JVM_OPTS -cp "$LIBS/*" \
        -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOGS" -Dkafka.log.name=format.log \
        kafka.tools.StorageTool format --config "$CONF" --cluster-id "$id" --standalone \
        >>"$LOGS/format.log" 2>&1; then
    tail -n 50 "$LOGS/format.log" >&2
    die "formatting the storage failed (see $LOGS/format.log)"
  fi
}

# wait_ready PID LOGOFFSET: waits until the broker logged "Kafka Server started"
# (after byte LOGOFFSET of server.log) and answers a Kafka request on PORT.
wait_ready() {
  local pid=$1 off=$2 deadline=$((SECONDS + START_TIMEOUT)) started=
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || { log "broker process $pid exited"; return 1; }
    if [[ -z $started && -f $LOGS/server.log ]]; then
      local size
      size=$(stat -c %s "$LOGS/server.log")
      ((size < off)) && off=0 # rolled over
      # (process substitution, not a pipe: with pipefail, grep -q closing the pipe
      # early would make tail die of SIGPIPE and the test fail)
      if grep -q 'Kafka Server started' < <(tail -c +"$((off + 1))" "$LOGS/server.log"); then
        started=1
      fi
    fi
    if [[ -n $started ]] && kafka_probe "$PORT"; then
      return 0
    fi
    sleep 0.25
  done
  log "broker not ready after ${START_TIMEOUT}s"
  return 1
}

# ---------------------------------------------------------------------------
# commands

LAUNCHED_PID=
STARTED_OK=

cleanup_failed_start() {
  if [[ -z $STARTED_OK && -n $LAUNCHED_PID ]]; then
    log "start failed; stopping broker (pid $LAUNCHED_PID)"
    kill_broker "$LAUNCHED_PID" || true
    rm -f "$PIDFILE"
  fi
}

# running_port: the client port the running broker was configured with (it may
# have been started with another KAFKA_PORT than the current environment's).
running_port() {
  local p
  p=$(sed -n 's#^listeners=PLAINTEXT://[^:]*:\([0-9]*\).*#\1#p' "$CONF" 2>/dev/null || true)
  printf '%s\n' "${p:-$PORT}"
}

cmd_start() {
  ignore_fedsync_dir
  mkdir -p "$KAFKA_DIR" "$LOGS"
  local pid p
  if pid=$(running_pid); then
    PORT=$(running_port)
    wait_ready "$pid" 0 || { show_logs; die "broker (pid $pid) runs but is not ready"; }
    printf '%s:%s\n' "$HOST" "$PORT"
    return 0
  fi
  rm -f "$PIDFILE"

  for p in "$PORT" "$CONTROLLER_PORT"; do
    if tcp_open "$p"; then
      die "port $HOST:$p is already in use by another process (not the broker in $KAFKA_DIR)"
    fi
  done

  fetch_jars
  write_config
  format_storage

  local off=0 out_off=0
  [[ -f $LOGS/server.log ]] && off=$(stat -c %s "$LOGS/server.log")
  [[ -f $LOGS/kafka.out ]] && out_off=$(stat -c %s "$LOGS/kafka.out")

  trap cleanup_failed_start EXIT
  trap 'exit 130' INT TERM HUP
  # The broker gets its own session (setsid) so that a Ctrl-C or a process-group
  # kill aimed at the caller (test runner, CI step) does not take it down; it is
  # stopped with "kafka.sh stop". Without job control the background child is not
  # a process-group leader, so setsid execs in place and $! is the JVM's pid.
  set +m
  local setsid=()
  command -v setsid >/dev/null && setsid=(setsid)
  # shellcheck disable=SC2086 # option lists are meant to be split
  nohup "${setsid[@]}" "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOGS" -Dkafka.log.name=server.log \
    $JVM_OPTS -cp "$LIBS/*" kafka.Kafka "$CONF" \
    >>"$LOGS/kafka.out" 2>&1 </dev/null 9>&- &
  LAUNCHED_PID=$!
  printf '%s\n' "$LAUNCHED_PID" >"$PIDFILE"

  if ! wait_ready "$LAUNCHED_PID" "$off"; then
    show_logs "$out_off" "$off"
    exit 1
  fi
  STARTED_OK=1
  trap - EXIT INT TERM HUP
  log "broker started (pid $LAUNCHED_PID) in ${SECONDS}s"
  printf '%s:%s\n' "$HOST" "$PORT"
}

cmd_stop() {
  local pid
  if pid=$(running_pid); then
    log "stopping broker (pid $pid)"
    kill_broker "$pid" || exit 1
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    PORT=$(running_port)
    if kafka_probe "$PORT"; then
      echo "running (pid $pid) at $HOST:$PORT"
    else
      echo "running (pid $pid), not answering on $HOST:$PORT yet"
    fi
    return 0
  fi
  echo "not running"
  return 3
}

with_lock() {
  mkdir -p "$KAFKA_DIR"
  if command -v flock >/dev/null; then
    exec 9>"$KAFKA_DIR/.lock"
    flock 9
  fi
  "$@"
}

case ${1:-} in
  start) with_lock cmd_start ;;
  stop) with_lock cmd_stop ;;
  restart) with_lock cmd_stop && with_lock cmd_start ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status|restart" >&2
    exit 2
    ;;
esac
