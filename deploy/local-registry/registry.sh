#!/usr/bin/env bash
# A real schema registry on 127.0.0.1 with the Confluent-compatible API: Apicurio Registry
# 2.6 (in-memory storage), run from its distribution on Maven Central. No Docker: Java 17 and
# Maven are enough, as for the local Kafka broker.
#
#   deploy/local-registry/registry.sh fetch          resolve the distribution into the cache (once)
#   deploy/local-registry/registry.sh start [DIR]    start, wait; prints the Confluent API's URL
#   deploy/local-registry/registry.sh stop  [DIR]    SIGTERM, wait, then SIGKILL
#   deploy/local-registry/registry.sh status [DIR]   exit 0 and print the URL when it answers
#
# DIR holds the log, pid and the file `url`; it defaults to $LOCAL_REGISTRY_DIR or
# ${TMPDIR:-/tmp}/lensnet-registry. The port is picked free at start (REGISTRY_PORT prefers one).
# The URL printed is what LENSNET_SCHEMA_REGISTRY__URL wants: http://127.0.0.1:PORT/apis/ccompat/v7.
# Environment: REGISTRY_HEAP_OPTS (default -Xmx256m), LOCAL_REGISTRY_HOME (unpacked distribution;
# default deploy/local-registry/target), REGISTRY_START_TIMEOUT (seconds, default 120).
#
# Why Apicurio 2.6 from Maven Central: Karapace is not on PyPI, and Apicurio 3.x publishes no
# runnable distribution there (only the Quarkus application jar, built for Java 21); 2.6.13's
# `-all.zip` is a complete runner for Java 17 with an in-memory store.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=2.6.13.Final
home=${LOCAL_REGISTRY_HOME:-$here/target}
heap=${REGISTRY_HEAP_OPTS:--Xmx256m}
start_timeout=${REGISTRY_START_TIMEOUT:-120}
runner="$home/apicurio-registry-app-$version-runner.jar"

die() { echo "registry.sh: $*" >&2; exit 1; }

need() {
  command -v java >/dev/null 2>&1 || die "java not found: install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless)."
  command -v python3 >/dev/null 2>&1 || die "python3 not found."
}

fetch() {
  [ -f "$home/.complete" ] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Apache Maven (Debian: apt-get install maven)."
  command -v unzip >/dev/null 2>&1 || die "unzip not found (Debian: apt-get install unzip)."
  echo "registry.sh: resolving Apicurio Registry $version from Maven Central into $home" >&2
  local tmp log
  tmp=$(mktemp -d)
  log="$tmp/mvn.log"
  # Maven's output only on failure, without the colour codes Debian's 3.8 prints even with -B.
  mvn -q -B -Dstyle.color=never dependency:copy \
    -Dartifact="io.apicurio:apicurio-registry-app:$version:zip:all" -DoutputDirectory="$tmp" \
    >"$log" 2>&1 || { sed 's/\x1b\[[0-9;]*m//g' "$log" >&2; rm -rf "$tmp"; die "maven could not resolve io.apicurio:apicurio-registry-app:$version:zip:all"; }
  rm -rf "$home" && mkdir -p "$home"
  unzip -q "$tmp/apicurio-registry-app-$version-all.zip" -d "$home"
  rm -rf "$tmp"
  [ -f "$runner" ] || die "no $runner in the distribution"
  touch "$home/.complete"
}

free_port() {
  python3 - "${REGISTRY_PORT:-}" <<'PY'
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

answers() {  # answers URL -> 0 when GET URL/subjects answers 200
  python3 - "$1/subjects" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

dir_of() { echo "${1:-${LOCAL_REGISTRY_DIR:-${TMPDIR:-/tmp}/lensnet-registry}}"; }

running() { [ -f "$1/registry.pid" ] && kill -0 "$(cat "$1/registry.pid")" 2>/dev/null; }

start() {
  local dir=$1 port url pid waited=0
  if running "$dir"; then cat "$dir/url"; return 0; fi
  rm -rf "$dir" && mkdir -p "$dir"
  port=$(free_port)
  url="http://127.0.0.1:$port/apis/ccompat/v7"
  echo "$url" >"$dir/url"
  # shellcheck disable=SC2086  # heap holds several JVM flags on purpose
  nohup java $heap -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
    -Dquarkus.log.console.color=false -Dquarkus.banner.enabled=false \
    -jar "$runner" >"$dir/registry.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/registry.pid"
  until answers "$url"; do
    kill -0 "$pid" 2>/dev/null || die "registry exited during start-up: $(tail -n 5 "$dir/registry.log")"
    [ "$waited" -lt $((start_timeout * 2)) ] || { kill -9 "$pid" 2>/dev/null; die "registry did not answer on $url within ${start_timeout}s (log: $dir/registry.log)"; }
    sleep 0.5
    waited=$((waited + 1))
  done
  echo "$url"
}

stop() {
  local dir=$1 pid i
  running "$dir" || { rm -f "$dir/registry.pid"; return 0; }
  pid=$(cat "$dir/registry.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$dir/registry.pid"
}

cmd=${1:-}
shift || true
case "$cmd" in
  fetch) need; fetch ;;
  start) need; fetch; start "$(dir_of "${1:-}")" ;;
  stop) stop "$(dir_of "${1:-}")" ;;
  status)
    dir=$(dir_of "${1:-}")
    running "$dir" && answers "$(cat "$dir/url")" && cat "$dir/url" && exit 0
    echo "registry.sh: no registry running in $dir" >&2; exit 1
    ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
