#!/usr/bin/env bash
# A real Apache Kafka on 127.0.0.1 in KRaft mode, run from Kafka's own jars on Maven Central:
# one combined broker + controller by default, or a cluster of N of them (a controller quorum
# of N, N <= 3, else 3). No Docker, no tarball: Java 17, Maven and openssl are enough.
#
#   deploy/local-kafka/kafka.sh fetch            resolve the jars into the cache (once)
#   deploy/local-kafka/kafka.sh start [DIR]      format storage, start, wait; prints bootstrap
#       --brokers N            N brokers (default 1); node i lives in DIR/node-i when N > 1
#       --security sasl_ssl    TLS + SASL/SCRAM-SHA-512 + ACLs (default plaintext; see below)
#   deploy/local-kafka/kafka.sh stop  [DIR]      SIGTERM, wait for a clean shutdown, then SIGKILL
#   deploy/local-kafka/kafka.sh kill  [DIR]      SIGKILL (hard crash, for fault tests)
#   deploy/local-kafka/kafka.sh restart [DIR]    start again on the same ports and data
#       --node I               stop, kill or restart only node I of a cluster
#   deploy/local-kafka/kafka.sh status [DIR]     exit 0 and print bootstrap when every node answers
#
# DIR holds the data, logs, pids and the file `bootstrap` (host:port[,host:port...]). It defaults
# to $LOCAL_KAFKA_DIR or ${TMPDIR:-/tmp}/lensnet-kafka. Ports are picked free at first start and
# kept for restarts; KAFKA_PORT names a port to prefer for the (first) broker when it is free
# (`make kafka-start`: 9092, the clients' default).
# Environment: KAFKA_HEAP_OPTS (default -Xms256m -Xmx768m, and -Xms128m -Xmx512m per node of a
# cluster), LOCAL_KAFKA_LIBS (jar folder; default deploy/local-kafka/target/libs),
# KAFKA_START_TIMEOUT (seconds, default 90), KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS (how long a
# new consumer group waits for more members before its first assignment; default 0, Kafka's
# own default is 3000; bench/bench_scaling.py --join-window sets it so that every process of a
# group gets partitions in the first assignment).
#
# --security sasl_ssl: every client listener is SASL_SSL (a local CA made with openssl signs
# the brokers' certificate for 127.0.0.1; DIR/tls/ca.pem is what clients trust), the only SASL
# mechanism is SCRAM-SHA-512, and StandardAuthorizer denies what no ACL allows. The users are
# created at format time (kafka-storage --add-scram) with random passwords:
#   admin    super user (the brokers' own inter-broker login, topic creation)
#   lensnet  the daemon: reads the photometry topics, writes alerts and event updates and
#            reads both back (the alert-once rule and the update ledger take their truth from
#            them on assignment), writes dead letters, uses its consumer group and
#            transactional ids, nothing else
#   replay   writes the photometry topics (and reads them, to resume where it stopped)
#   reader   reads alerts, event updates and dead letters, in groups of its own
#            (lensnet-subscriber-*)
# DIR/users/<user>/ is a secrets folder for `lensnet --secrets-dir` (the file
# lensnet_kafka__sasl_password) and DIR/users/<user>.env sets the other LENSNET_KAFKA__*
# variables. The ACLs name the topics, group and transactional ids by prefix from the
# variables the daemon reads, with the daemon's defaults: LENSNET_TOPICS__PHOTOMETRY_PREFIX,
# LENSNET_TOPICS__ALERTS, LENSNET_TOPICS__DEAD_LETTER, LENSNET_TOPICS__EVENTS and
# LENSNET_CONSUMER__GROUP_ID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
libs=${LOCAL_KAFKA_LIBS:-$here/target/libs}
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

nodes() {  # nodes DIR [I]: the node folders (DIR itself for a single broker), or node I's
  local dir=$1 only=${2:-}
  if [ ! -d "$dir/node-1" ]; then
    [ -z "$only" ] || [ "$only" = 1 ] || die "$dir holds a single broker: no node $only"
    echo "$dir"
  elif [ -n "$only" ]; then
    [ -d "$dir/node-$only" ] || die "no node $only in $dir"
    echo "$dir/node-$only"
  else
    local i=1
    while [ -d "$dir/node-$i" ]; do echo "$dir/node-$i"; i=$((i + 1)); done
  fi
}

running() {  # running NODE_DIR -> 0 if the recorded pid is alive
  [ -f "$1/kafka.pid" ] && kill -0 "$(cat "$1/kafka.pid")" 2>/dev/null
}

answers() {  # answers HOST:PORT -> 0 when the broker accepts TCP connections
  local host=${1%:*} port=${1##*:}
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

secret() { openssl rand -hex 16; }

ssl() {  # ssl LOG ARGS...: openssl, its chatter to LOG, its error on failure
  local log=$1
  shift
  openssl "$@" >>"$log" 2>&1 || die "openssl $1 failed: $(tail -n 3 "$log")"
}

make_tls() {  # make_tls DIR: a local CA, and a certificate for 127.0.0.1 it signs
  local tls=$1/tls
  mkdir -p "$tls" && chmod 700 "$tls"
  ssl "$tls/openssl.log" req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=lensnet local CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem"
  ssl "$tls/openssl.log" req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/broker.key" -out "$tls/broker.csr"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
    >"$tls/broker.ext"
  ssl "$tls/openssl.log" x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 30 -extfile "$tls/broker.ext" -out "$tls/broker.pem"
  # The brokers' keystore (PKCS12, which the JDK reads); they trust the CA from its PEM file.
  secret >"$tls/keystore.password"
  ssl "$tls/openssl.log" pkcs12 -export -name broker -in "$tls/broker.pem" \
    -inkey "$tls/broker.key" -certfile "$tls/ca.pem" -passout "file:$tls/keystore.password" \
    -out "$tls/broker.p12"
  rm -f "$tls/broker.csr" "$tls/broker.ext"
  chmod 644 "$tls/ca.pem"
}

USERS="admin lensnet replay reader"

make_users() {  # make_users DIR: passwords, secrets folders and env files of the SCRAM users
  local dir=$1 user
  mkdir -p "$dir/users" && chmod 700 "$dir/users"
  for user in $USERS; do
    mkdir -p "$dir/users/$user"
    secret >"$dir/users/$user/lensnet_kafka__sasl_password"
    chmod 600 "$dir/users/$user/lensnet_kafka__sasl_password"
    cat >"$dir/users/$user.env" <<EOF
LENSNET_KAFKA__SECURITY_PROTOCOL=SASL_SSL
LENSNET_KAFKA__SASL_MECHANISM=SCRAM-SHA-512
LENSNET_KAFKA__SASL_USERNAME=$user
LENSNET_KAFKA__SSL_CA_LOCATION=$dir/tls/ca.pem
EOF
  done
}

password() { cat "$1/users/$2/lensnet_kafka__sasl_password"; }

listeners() {  # listeners DIR BROKER_PORT CONTROLLER_PORT SECURITY: the listener properties
  local dir=$1 broker_port=$2 controller_port=$3 security=$4
  if [ "$security" = plaintext ]; then
    cat <<EOF
listeners=PLAINTEXT://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$broker_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    return
  fi
  # Brokers talk to each other over SASL_SSL as admin (SCRAM). The controller listener cannot
  # use SCRAM (its credentials live in the metadata the controllers serve), so it takes PLAIN
  # with the admin password, on loopback.
  local admin tls=$dir/tls keystore
  admin=$(password "$dir" admin)
  keystore=$(cat "$tls/keystore.password")
  cat <<EOF
listeners=SASL_SSL://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$broker_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin";
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$keystore
ssl.key.password=$keystore
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
EOF
}

write_node() {  # write_node DIR NODE_DIR ID N VOTERS BROKER_PORT CONTROLLER_PORT SECURITY
  local dir=$1 node=$2 id=$3 n=$4 voters=$5 broker_port=$6 controller_port=$7 security=$8
  # Internal topics replicated 3 times (min ISR 2) on a cluster of 3 or more.
  local replicas=$((n < 3 ? n : 3)) min_isr=$((n < 3 ? 1 : 2))
  mkdir -p "$node/data" "$node/logs"
  {
    cat <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
EOF
    listeners "$dir" "$broker_port" "$controller_port" "$security"
    cat <<EOF
log.dirs=$node/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=${KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS:-0}
log.retention.hours=-1
log.segment.bytes=67108864
EOF
  } >"$node/server.properties"
  chmod 600 "$node/server.properties"
  cat >"$node/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $node/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
EOF
  echo "127.0.0.1:$broker_port" >"$node/bootstrap"
}

configure() {  # configure DIR N SECURITY: every node's configuration, storage formatted
  local dir=$1 n=$2 security=$3 i node port cluster_id voters="" bootstrap="" taken=" " user
  local -a broker_ports=() controller_ports=() scram=()
  for i in $(seq 1 "$n"); do
    port=$(free_port "$([ "$i" = 1 ] && echo "${KAFKA_PORT:-}")")
    while [[ $taken == *" $port "* ]]; do port=$(free_port); done
    broker_ports[i]=$port
    taken+="$port "
    port=$(free_port)
    while [[ $taken == *" $port "* ]]; do port=$(free_port); done
    controller_ports[i]=$port
    taken+="$port "
    # A quorum of 3 voters at most; further nodes follow it as observers.
    [ "$i" -gt 3 ] || voters+="${voters:+,}$i@127.0.0.1:$port"
  done
  if [ "$security" = sasl_ssl ]; then
    make_tls "$dir"
    make_users "$dir"
    for user in $USERS; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(password "$dir" "$user")]")
    done
  fi
  cluster_id=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null)
  for i in $(seq 1 "$n"); do
    if [ "$n" = 1 ]; then node=$dir; else node=$dir/node-$i; fi
    write_node "$dir" "$node" "$i" "$n" "$voters" "${broker_ports[i]}" "${controller_ports[i]}" \
      "$security"
    bootstrap+="${bootstrap:+,}127.0.0.1:${broker_ports[i]}"
    java -cp "$libs/*" -Dlog4j2.configurationFile="$node/log4j2.properties" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$node/server.properties" "${scram[@]}" \
      >"$node/logs/format.log" 2>&1 \
      || die "storage format failed: $(tail -n 3 "$node/logs/format.log")"
  done
  echo "$bootstrap" >"$dir/bootstrap"
}

heap_of() {  # heap_of DIR: the JVM's heap flags, smaller per node of a cluster
  if [ -n "${KAFKA_HEAP_OPTS:-}" ]; then
    echo "$KAFKA_HEAP_OPTS"
  elif [ -d "$1/node-1" ]; then
    echo "-Xms128m -Xmx512m"
  else
    echo "-Xms256m -Xmx768m"
  fi
}

spawn() {  # spawn NODE_DIR HEAP: start the node's JVM in the background
  local node=$1 heap=$2
  # shellcheck disable=SC2086  # heap holds several JVM flags on purpose
  nohup java $heap -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$node/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$node/server.properties" >"$node/logs/stdout.log" 2>&1 &
  echo "$!" >"$node/kafka.pid"
}

started() {  # started NODE_DIR -> 0 once it accepts connections and says it started
  answers "$(cat "$1/bootstrap")" && grep -q "Kafka Server started" "$1/logs/server.log" 2>/dev/null
}

launch() {  # launch NODE...: start the nodes together (a quorum needs its voters), wait for all
  local node waited=0 pending heap
  heap=$(heap_of "$(dirname "$1")")
  for node in "$@"; do
    # A restart of a stopped node: the log of its last life stays beside the new one.
    [ ! -f "$node/logs/server.log" ] || running "$node" || mv "$node/logs/server.log" "$node/logs/server.log.$(date +%s%N)"
    running "$node" || spawn "$node" "$heap"
  done
  while :; do
    pending=""
    for node in "$@"; do
      started "$node" && continue
      pending=$node
      running "$node" || die "broker exited during start-up: $(tail -n 5 "$node/logs/stdout.log" "$node/logs/server.log" 2>/dev/null)"
    done
    [ -n "$pending" ] || return 0
    if [ "$waited" -ge $((start_timeout * 5)) ]; then
      for node in "$@"; do stop "$node" KILL; done
      die "broker did not answer on $(cat "$pending/bootstrap") within ${start_timeout}s (logs: $pending/logs)"
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

grant() {  # grant DIR: the ACLs of the SASL users (see the header), made as admin
  local dir=$1 props=$1/users/admin.properties
  local photometry=${LENSNET_TOPICS__PHOTOMETRY_PREFIX:-kmtnet.photometry.}
  local alerts=${LENSNET_TOPICS__ALERTS:-lensnet.alerts}
  local dead_letter=${LENSNET_TOPICS__DEAD_LETTER:-lensnet.deadletter}
  local events=${LENSNET_TOPICS__EVENTS:-lensnet.events}
  local group=${LENSNET_CONSUMER__GROUP_ID:-lensnet-daemon}
  cat >"$props" <<EOF
bootstrap.servers=$(cat "$dir/bootstrap")
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(password "$dir" admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.pem
EOF
  chmod 600 "$props"
  # principal operation resource-type pattern-type name. The daemon's transactional id is
  # <group>-<instance>: the group's name is its prefix.
  java -cp "$libs/*" "$here/Acls.java" "$props" >"$dir/acls.log" 2>&1 <<EOF || die "ACLs not created: $(tail -n 5 "$dir/acls.log")"
User:lensnet READ TOPIC PREFIXED $photometry
User:lensnet WRITE TOPIC PREFIXED $alerts
User:lensnet READ TOPIC PREFIXED $alerts
User:lensnet WRITE TOPIC PREFIXED $dead_letter
User:lensnet WRITE TOPIC PREFIXED $events
User:lensnet READ TOPIC PREFIXED $events
User:lensnet READ GROUP PREFIXED $group
User:lensnet WRITE TRANSACTIONAL_ID PREFIXED $group
User:replay WRITE TOPIC PREFIXED $photometry
User:replay READ TOPIC PREFIXED $photometry
User:replay READ GROUP PREFIXED lensnet-replay-
User:reader READ TOPIC PREFIXED $alerts
User:reader READ TOPIC PREFIXED $dead_letter
User:reader READ TOPIC PREFIXED $events
User:reader READ GROUP PREFIXED lensnet-subscriber-
EOF
}

stop() {  # stop NODE_DIR SIGNAL
  local node=$1 sig=$2 pid i
  running "$node" || { rm -f "$node/kafka.pid"; return 0; }
  pid=$(cat "$node/kafka.pid")
  kill "-$sig" "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kafka.sh: broker $pid ignored SIG$sig for 30s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$node/kafka.pid"
}

stop_nodes() {  # stop_nodes SIGNAL NODE...: all at once (a quorum cannot shrink one by one)
  local sig=$1 node waiting=()
  shift
  for node in "$@"; do
    stop "$node" "$sig" &
    waiting+=("$!")
  done
  for node in "${waiting[@]}"; do wait "$node"; done
}

cmd=${1:-}
shift || true
brokers=1 security=plaintext only="" target=""
while [ $# -gt 0 ]; do
  case "$1" in
    --brokers) brokers=${2:-}; shift 2 || shift ;;
    --security) security=${2:-}; shift 2 || shift ;;
    --node) only=${2:-}; shift 2 || shift ;;
    *) target=$1; shift ;;
  esac
done
[[ $brokers =~ ^[1-9][0-9]?$ ]] || die "--brokers takes a number of brokers (1 to 99), not '$brokers'"
case "$security" in plaintext|sasl_ssl) ;; *) die "--security takes plaintext or sasl_ssl, not '$security'" ;; esac
[ -z "$only" ] || [[ $only =~ ^[1-9][0-9]*$ ]] || die "--node takes a node number (1, 2, ...), not '$only'"
case "$cmd" in
  fetch) need; fetch ;;
  start)
    need; fetch
    dir=$(dir_of "$target")
    if [ -f "$dir/bootstrap" ] && running "$(nodes "$dir" | head -n 1)"; then cat "$dir/bootstrap"; exit 0; fi
    rm -rf "$dir" && mkdir -p "$dir"
    configure "$dir" "$brokers" "$security"
    mapfile -t all < <(nodes "$dir")
    launch "${all[@]}"
    [ "$security" = plaintext ] || grant "$dir"
    cat "$dir/bootstrap"
    ;;
  restart)
    need; fetch
    dir=$(dir_of "$target")
    mapfile -t chosen < <(nodes "$dir" "$only")
    [ "${#chosen[@]}" -gt 0 ] || exit 1  # nodes said why
    [ -f "${chosen[0]}/server.properties" ] || die "nothing to restart in $dir; use start"
    stop_nodes TERM "${chosen[@]}"
    launch "${chosen[@]}"
    cat "$dir/bootstrap"
    ;;
  stop|kill)
    dir=$(dir_of "$target")
    mapfile -t chosen < <(nodes "$dir" "$only")
    [ "${#chosen[@]}" -gt 0 ] || exit 1  # nodes said why
    if [ "$cmd" = stop ]; then stop_nodes TERM "${chosen[@]}"; else stop_nodes KILL "${chosen[@]}"; fi
    ;;
  status)
    dir=$(dir_of "$target")
    for node in $(nodes "$dir"); do
      if ! running "$node" || ! answers "$(cat "$node/bootstrap")"; then
        echo "kafka.sh: no broker running in $dir" >&2
        exit 1
      fi
    done
    cat "$dir/bootstrap"
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
