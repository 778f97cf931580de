#!/usr/bin/env bash
# A real, single-node Apache Kafka (KRaft: combined broker + controller) on 127.0.0.1, run from
# Kafka's own jars on Maven Central. No Docker, no tarball: Java 17 and Maven are enough.
#
#   deploy/local-kafka/kafka.sh fetch            resolve the jars into the cache (once)
#   deploy/local-kafka/kafka.sh start [DIR]      format storage, start, wait; prints bootstrap
#   deploy/local-kafka/kafka.sh stop  [DIR]      SIGTERM, wait for a clean shutdown, then SIGKILL
#   deploy/local-kafka/kafka.sh kill  [DIR]      SIGKILL (hard crash, for fault tests)
#   deploy/local-kafka/kafka.sh restart [DIR]    start again on the same ports and data
#   deploy/local-kafka/kafka.sh status [DIR]     exit 0 and print bootstrap when it answers
#
# DIR holds the broker's data, logs, pid and the file `bootstrap` (host:port). It defaults to
# $LOCAL_KAFKA_DIR or ${TMPDIR:-/tmp}/lensnet-kafka. Ports are picked free at first start and kept
# for restarts; KAFKA_PORT names a broker port to prefer when it is free (`make kafka-start`:
# 9092, the clients' default). Environment: KAFKA_HEAP_OPTS (default -Xms256m -Xmx768m), LOCAL_KAFKA_LIBS
# (jar folder; default deploy/local-kafka/target/libs), KAFKA_START_TIMEOUT (seconds, default 90).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
libs=${LOCAL_KAFKA_LIBS:-$here/target/libs}
heap=${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
start_timeout=${KAFKA_START_TIMEOUT:-90}

die() { echo "kafka.sh: $*" >&2; exit 1; }

need() {
  command -v java >/dev/null 2>&1 || die "java not found: install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless)."
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | awk -F= '/java.specification.version/ {gsub(/ /,"",$2); print $2}')
  [ "${major%%.*}" -ge 17 ] 2>/dev/null || die "java $major found; Kafka 4.x needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless)."
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Apache Maven (Debian: apt-get install maven) to fetch Kafka's jars from Maven Central."
  echo "kafka.sh: resolving Apache Kafka jars from Maven Central into $libs" >&2
  mkdir -p "$libs"
  # Maven's output only on failure, without the colour codes Debian's Maven 3.8 prints even in
  # batch mode.
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" >"$libs/.mvn.log" 2>&1 || {
    sed 's/\x1b\[[0-9;]*m//g' "$libs/.mvn.log" >&2
    die "maven could not resolve org.apache.kafka:kafka_2.13 (see above); is Maven Central reachable?"
  }
  touch "$libs/.complete"
}

free_port() {  # free_port [PREFERRED]: PREFERRED when it is free, else any free port
  python3 - "${1:-}" <<'PY'
import socket, sys
preferred = int(sys.argv[1]) if sys.argv[1:] and sys.argv[1] else 0
for port in ([preferred] if preferred else []) + [0]:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            print(s.getsockname()[1])
            break
    except OSError:
        continue
PY
}

dir_of() { echo "${1:-${LOCAL_KAFKA_DIR:-${TMPDIR:-/tmp}/lensnet-kafka}}"; }

running() {  # running DIR -> 0 if the recorded pid is alive
  [ -f "$1/kafka.pid" ] && kill -0 "$(cat "$1/kafka.pid")" 2>/dev/null
}

answers() {  # answers HOST:PORT -> 0 when the broker accepts TCP connections
  local host=${1%:*} port=${1##*:}
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

configure() {  # configure DIR: write server.properties with fresh free ports
  local dir=$1 broker_port controller_port
  broker_port=$(free_port "${KAFKA_PORT:-}")
  controller_port=$(free_port)
  while [ "$controller_port" = "$broker_port" ]; do controller_port=$(free_port); done
  mkdir -p "$dir/data" "$dir/logs"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$broker_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=-1
log.segment.bytes=67108864
EOF
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
EOF
  echo "127.0.0.1:$broker_port" >"$dir/bootstrap"
  java -cp "$libs/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool \
    format -t "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
    -c "$dir/server.properties" >"$dir/logs/format.log" 2>&1 \
    || die "storage format failed: $(tail -n 3 "$dir/logs/format.log")"
}

launch() {  # launch DIR: start the JVM and wait until it answers
  local dir=$1 bootstrap pid waited=0
  bootstrap=$(cat "$dir/bootstrap")
  # shellcheck disable=SC2086  # heap holds several JVM flags on purpose
  nohup java $heap -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/kafka.pid"
  until answers "$bootstrap" && grep -q "Kafka Server started" "$dir/logs/server.log" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || die "broker exited during start-up: $(tail -n 5 "$dir/logs/stdout.log" "$dir/logs/server.log" 2>/dev/null)"
    [ "$waited" -lt $((start_timeout * 5)) ] || { kill -9 "$pid" 2>/dev/null; die "broker did not answer on $bootstrap within ${start_timeout}s (logs: $dir/logs)"; }
    sleep 0.2
    waited=$((waited + 1))
  done
  echo "$bootstrap"
}

stop() {  # stop DIR SIGNAL
  local dir=$1 sig=$2 pid i
  running "$dir" || { rm -f "$dir/kafka.pid"; return 0; }
  pid=$(cat "$dir/kafka.pid")
  kill "-$sig" "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kafka.sh: broker $pid ignored SIG$sig for 30s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/kafka.pid"
}

cmd=${1:-}
shift || true
case "$cmd" in
  fetch) need; fetch ;;
  start)
    need; fetch
    dir=$(dir_of "${1:-}")
    if running "$dir"; then cat "$dir/bootstrap"; exit 0; fi
    rm -rf "$dir" && mkdir -p "$dir"
    configure "$dir"
    launch "$dir"
    ;;
  restart)
    need; fetch
    dir=$(dir_of "${1:-}")
    [ -f "$dir/server.properties" ] || die "nothing to restart in $dir; use start"
    running "$dir" && stop "$dir" TERM
    launch "$dir"
    ;;
  stop) stop "$(dir_of "${1:-}")" TERM ;;
  kill) stop "$(dir_of "${1:-}")" KILL ;;
  status)
    dir=$(dir_of "${1:-}")
    running "$dir" && answers "$(cat "$dir/bootstrap")" && cat "$dir/bootstrap" && exit 0
    echo "kafka.sh: no broker running in $dir" >&2; exit 1
    ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
