#!/usr/bin/env bash
# A real, single-node Apache Kafka broker (KRaft mode, no ZooKeeper) for tests.
#
# Kafka is installed from Maven Central jars only (no release tarball: this
# project's machines reach Maven Central but not the Apache download site).
# See README.md beside this file for usage, resource use and measured timings.
#
#   kafka.sh install
#   kafka.sh start [--port N] [--dir DIR]    # prints 127.0.0.1:PORT on stdout
#   kafka.sh stop  [--dir DIR] [--purge]     # --purge also deletes DIR
#
# DIR holds the broker's config, data, log (broker.log), pid (broker.pid) and
# address (bootstrap). It defaults to $TMPDIR/ferrobeam-kafka-broker: fine for
# one broker; give each broker its own --dir to run several at once (e.g.
# parallel tests). Without --port, free ports are picked.
#   kafka.sh topics --bootstrap ADDR create NAME [--partitions N]
#   kafka.sh topics --bootstrap ADDR list
#   kafka.sh class MAIN_CLASS [ARGS...]      # any Kafka CLI class on the classpath
#
# Everything except the final bootstrap address of `start` goes to stderr, so
# callers can do `addr=$(kafka.sh start --dir "$d")`.
#
# Environment:
#   FERROBEAM_KAFKA_HOME           cache root (default ~/.cache/ferrobeam-kafka);
#                                  jars land in $FERROBEAM_KAFKA_HOME/<version>/libs
#   FERROBEAM_KAFKA_HEAP_OPTS      broker heap (default "-Xms64m -Xmx512m")
#   FERROBEAM_KAFKA_START_TIMEOUT  seconds `start` waits for the broker (default 60)
#   FERROBEAM_KAFKA_STOP_TIMEOUT   seconds `stop` waits after SIGTERM (default 30)
set -euo pipefail

# ---------------------------------------------------------------------------
# Pinned versions.
#
# Kafka 3.9 is the last 3.x line: KRaft is production-ready there, it still
# speaks the old protocol versions that older clients (e.g. Beam's Java
# KafkaIO with kafka-clients 2.x) use, and it runs on Java 11+. The logging
# binding is the one the 3.9 release tarball ships (slf4j 1.7 -> reload4j,
# i.e. log4j 1.x syntax config files).
KAFKA_VERSION=3.9.2
SCALA_BINARY=2.13
SLF4J_VERSION=1.7.36
RELOAD4J_VERSION=1.2.25   # slf4j-reload4j would pull 1.2.19; 3.9's tarball ships 1.2.25
MIN_JAVA=11
# Maven plugin doing the resolution; pinned so the resolved set is reproducible.
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

KAFKA_HOME_ROOT="${FERROBEAM_KAFKA_HOME:-$HOME/.cache/ferrobeam-kafka}"
VERSION_DIR="$KAFKA_HOME_ROOT/$KAFKA_VERSION"
LIBS="$VERSION_DIR/libs"
MARKER="$VERSION_DIR/install.ok"            # written last, only after success
MANIFEST="$VERSION_DIR/libs.sha256"         # sha256 of every jar in libs/
BROKER_LOG4J="$VERSION_DIR/log4j.properties"
TOOLS_LOG4J="$VERSION_DIR/tools-log4j.properties"
# Maven's local repository lives inside the cache too, so a cold cache really
# is cold and nothing in ~/.m2 is touched or relied upon.
M2_REPO="$KAFKA_HOME_ROOT/m2"

DEFAULT_DIR="${TMPDIR:-/tmp}/ferrobeam-kafka-broker"

HEAP_OPTS="${FERROBEAM_KAFKA_HEAP_OPTS:--Xms64m -Xmx512m}"
START_TIMEOUT="${FERROBEAM_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${FERROBEAM_KAFKA_STOP_TIMEOUT:-30}"
# Test brokers are small and short-lived, on 2-core machines: the serial GC
# and C1-only JIT cut startup time and the CPU stolen from the tests.
JVM_OPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# ---------------------------------------------------------------------------
# install

# shellcheck source=scripts/java-version.sh
. "$(dirname "${BASH_SOURCE[0]}")/../java-version.sh"

# ensure_command CMD DEBIAN_PACKAGE WHAT: installs the package with apt-get
# when CMD is missing (we are root on a fresh machine), else explains.
ensure_command() {
  local cmd=$1 package=$2 what=$3
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "$cmd not found and not root: install $what"
  log "$cmd not found: installing $package with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y "$package" >&2
}

ensure_java() {
  ensure_command java openjdk-17-jre-headless "a Java $MIN_JAVA+ runtime"
  local major
  major=$(java_major)
  if [ -z "$major" ] || [ "$major" -lt "$MIN_JAVA" ]; then
    die "Kafka $KAFKA_VERSION needs Java $MIN_JAVA+, found: $(java -version 2>&1 | head -n1)"
  fi
}

ensure_maven() {
  ensure_command mvn maven "Maven"
}

# The throwaway project whose runtime dependency closure is "a Kafka broker
# plus Kafka's CLI tools plus a logging binding". Maven does the resolution
# (scopes, exclusions, version mediation) exactly as Kafka's published POMs
# declare it, which a hand-written jar list would not.
pom_xml() {
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ferrobeam.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- The broker: kafka.Kafka, kafka.tools.StorageTool. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_BINARY</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- CLI tools: TopicCommand, console producer/consumer. kafka-tools also
         depends on connect-runtime (Jetty, Jersey, ~15 MB) for its Connect
         plugin tool only; none of the tools used here need it. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion>
          <groupId>org.apache.kafka</groupId>
          <artifactId>connect-runtime</artifactId>
        </exclusion>
        <exclusion>
          <groupId>com.fasterxml.jackson.jaxrs</groupId>
          <artifactId>jackson-jaxrs-json-provider</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <!-- Logging: Kafka's POMs only carry slf4j-api; without a binding the
         broker logs nothing at all. Same binding as the release tarball. -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>$RELOAD4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

# Broker logs go to stdout, which `start` redirects to DIR/broker.log.
broker_log4j() {
  cat <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
# Per-request and per-partition chatter: useless in test logs.
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log.LogLoader=WARN
EOF
}

# CLI tools log warnings only, to stderr, so their stdout is just their output
# (e.g. the consumed messages).
tools_log4j() {
  cat <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

# Identifies what an install produced; a change to this script's pins or
# generated files invalidates an existing cache.
recipe_hash() {
  { pom_xml; broker_log4j; tools_log4j; } | sha256sum | cut -d' ' -f1
}

is_installed() {
  [ -f "$MARKER" ] && [ -f "$MANIFEST" ] && [ -f "$BROKER_LOG4J" ] && [ -f "$TOOLS_LOG4J" ] || return 1
  [ "$(cat "$MARKER")" = "recipe=$(recipe_hash)" ] || return 1
  # Every jar is still there and intact, and there is no stray extra one
  # (a foreign jar, e.g. a second slf4j binding, would change behaviour).
  [ "$(find "$LIBS" -maxdepth 1 -name '*.jar' | wc -l)" = "$(wc -l <"$MANIFEST")" ] || return 1
  (cd "$LIBS" && sha256sum --quiet --status -c "$MANIFEST")
}

# Sanity checks on a freshly resolved jar set before it is accepted.
check_jar_set() {
  local dir=$1 jar n
  for jar in "kafka_$SCALA_BINARY-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar" \
             "kafka-server-$KAFKA_VERSION.jar" "kafka-raft-$KAFKA_VERSION.jar" \
             "kafka-metadata-$KAFKA_VERSION.jar" "kafka-storage-$KAFKA_VERSION.jar" \
             "kafka-tools-$KAFKA_VERSION.jar" "slf4j-api-$SLF4J_VERSION.jar" \
             "slf4j-reload4j-$SLF4J_VERSION.jar"; do
    [ -s "$dir/$jar" ] || die "resolved jar set lacks $jar"
  done
  compgen -G "$dir/scala-library-*.jar" >/dev/null || die "resolved jar set lacks scala-library"
  [ -s "$dir/reload4j-$RELOAD4J_VERSION.jar" ] || die "resolved jar set lacks reload4j-$RELOAD4J_VERSION.jar"
  # Exactly one slf4j binding, or slf4j picks one at random and warns.
  n=$(find "$dir" -maxdepth 1 \( -name 'slf4j-reload4j-*.jar' -o -name 'slf4j-log4j12-*.jar' \
        -o -name 'logback-classic-*.jar' -o -name 'log4j-slf4j*-impl-*.jar' \
        -o -name 'slf4j-simple-*.jar' \) | wc -l)
  [ "$n" = 1 ] || die "expected exactly one slf4j binding in the jar set, found $n"
  # Finally the classpath must actually load the broker's main class.
  java -cp "$dir/*" kafka.Kafka --version 2>/dev/null | grep -q "^$KAFKA_VERSION" \
    || die "'java -cp libs/* kafka.Kafka --version' did not report $KAFKA_VERSION"
}

cmd_install() {
  [ $# = 0 ] || die "install takes no arguments"
  ensure_java
  mkdir -p "$VERSION_DIR"
  # Parallel test processes may all call install (or start, which installs):
  # serialise them, the losers then find a complete cache.
  # The lock is on fd 9, closed again before returning so that a broker
  # started afterwards by this same shell does not inherit (and hold) it.
  exec 9>"$VERSION_DIR/.install.lock"
  flock 9
  if is_installed; then
    log "Kafka $KAFKA_VERSION already installed in $LIBS"
  else
    [ -f "$MARKER" ] && log "cache in $VERSION_DIR is incomplete, modified or from another recipe: reinstalling"
    install_locked
  fi
  exec 9>&-
}

install_locked() {
  local t0=$SECONDS
  log "installing Kafka $KAFKA_VERSION (jars from Maven Central) into $LIBS"
  ensure_maven
  rm -f "$MARKER"
  mkdir -p "$VERSION_DIR/resolve" "$M2_REPO"
  pom_xml >"$VERSION_DIR/resolve/pom.xml"
  rm -rf "$LIBS.tmp"
  # -C: fail on a checksum mismatch (every artifact's .sha1 is checked against
  #     what was downloaded), instead of Maven's default of only warning.
  # includeScope=runtime: compile + runtime scope, i.e. what the JVM needs.
  if ! mvn -B -C -ntp -Dmaven.repo.local="$M2_REPO" -f "$VERSION_DIR/resolve/pom.xml" \
         "$DEPENDENCY_PLUGIN:copy-dependencies" \
         -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" \
         >"$VERSION_DIR/install.log" 2>&1; then
    tail -n 40 "$VERSION_DIR/install.log" >&2
    die "Maven could not resolve Kafka's jars (full log: $VERSION_DIR/install.log)"
  fi
  check_jar_set "$LIBS.tmp"
  rm -rf "$LIBS"
  mv "$LIBS.tmp" "$LIBS"
  broker_log4j >"$BROKER_LOG4J"
  tools_log4j >"$TOOLS_LOG4J"
  (cd "$LIBS" && sha256sum -- *.jar) >"$MANIFEST"
  echo "recipe=$(recipe_hash)" >"$MARKER"
  log "installed $(wc -l <"$MANIFEST") jars ($(du -sh "$LIBS" | cut -f1)) in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# start / stop

port_in_use() {
  # A TCP connect to a closed loopback port is refused at once.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  # Random, below the kernel's ephemeral range (32768+) so outgoing
  # connections of the tests cannot be holding it. Not race-free against
  # another process picking the same number; `start` retries on a bind
  # failure when it chose the ports itself.
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    if ! port_in_use "$p" && [ "$p" != "${1:-}" ]; then
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# True if the process exists and is not a zombie (an exited child that the
# shell has not reaped yet still answers kill -0).
pid_running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# True if the pid file names a live broker of this DIR (guards against a
# recycled pid belonging to some other process).
broker_alive() {
  local dir=$1 pid
  [ -f "$dir/broker.pid" ] || return 1
  pid=$(cat "$dir/broker.pid")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $dir/server.properties"
}

write_server_properties() {
  local dir=$1 port=$2 cport=$3
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/kafka/kafka.sh: one combined broker+controller node
# (KRaft), reachable on 127.0.0.1 only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data

# Tests create topics by producing to them.
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics: one replica (there is one node) and one partition (the
# default 50 makes the first consumer group / transaction take seconds).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1

# Consumer groups start at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0

# Keep every record: tests produce records with old event-time timestamps
# (1970, a fixed day) on purpose, and time-based retention (7 days by
# default, judged by record timestamps) would delete them within minutes.
log.retention.ms=-1

# Small footprint: tests need few threads.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
EOF
}

# Bash-generated cluster id (16 random bytes, base64url without padding, the
# format of Kafka's Uuid): saves a JVM start for `kafka-storage random-uuid`.
# Like Kafka's Uuid.randomUuid(), never one starting with '-': the storage
# tool's argument parser would take it for an option (1 start in 64 failed so).
random_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [ "${id:0:1}" = - ] || break
  done
  echo "$id"
}

# Runs a Kafka CLI class: a small JVM that logs warnings only. An array, not
# a function, so that `timeout` can run it too.
TOOLS_JAVA=(java -Xmx256m "${JVM_OPTS[@]}" -Dlog4j.configuration="file:$TOOLS_LOG4J"
            -cp "$LIBS/*")

# One attempt to bring up a broker in DIR. Returns 0 when it answers, 1 on
# failure, 3 on a port clash that a retry with other ports can fix.
launch_broker() {
  local dir=$1 port=$2 cport=$3 deadline pid
  write_server_properties "$dir" "$port" "$cport"
  rm -rf "$dir/data"
  "${TOOLS_JAVA[@]}" kafka.tools.StorageTool format -t "$(random_cluster_id)" \
    -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; die "formatting the KRaft storage in $dir/data failed"; }

  # stdin/stdout/stderr all redirected: a caller capturing our output (e.g.
  # Python's subprocess.run(capture_output=True)) must not be left holding
  # a pipe that the background broker keeps open.
  # shellcheck disable=SC2086  # HEAP_OPTS is a list of options: split it.
  java $HEAP_OPTS "${JVM_OPTS[@]}" -Dlog4j.configuration="file:$BROKER_LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$dir/broker.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/broker.pid"

  deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    # pid_running, not broker_alive: just after the fork the child may not
    # have exec'd java yet, so its command line is still bash's.
    if ! pid_running "$pid"; then
      grep -q 'Address already in use' "$dir/broker.log" && return 3
      return 1
    fi
    # Cheap checks first (the broker logs this once it is registered with its
    # controller and unfenced), then a real metadata request from a client.
    if grep -q 'Kafka Server started' "$dir/broker.log" && port_in_use "$port"; then
      if timeout 30 "${TOOLS_JAVA[@]}" org.apache.kafka.tools.TopicCommand \
           --bootstrap-server "127.0.0.1:$port" --list >/dev/null 2>"$dir/check.log"; then
        return 0
      fi
    fi
    sleep 0.5
  done
  log "broker did not answer within $START_TIMEOUT s"
  return 1
}

cmd_start() {
  local port="" dir="" auto_ports=0 cport attempt rc=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port=${2:?--port needs a value}; shift 2 ;;
      --dir) dir=${2:?--dir needs a value}; shift 2 ;;
      *) die "start: unknown argument $1" ;;
    esac
  done
  # Installing is a no-op when the cache is complete (well under a second).
  cmd_install
  dir=${dir:-$DEFAULT_DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if broker_alive "$dir"; then
    die "a broker is already running in $dir (pid $(cat "$dir/broker.pid"), $(cat "$dir/bootstrap" 2>/dev/null))"
  fi
  rm -f "$dir/broker.pid" "$dir/bootstrap"
  if [ -z "$port" ]; then
    auto_ports=1
  elif port_in_use "$port"; then
    die "port $port on 127.0.0.1 is already in use"
  fi

  local t0=$SECONDS
  for attempt in 1 2 3; do
    [ "$auto_ports" = 1 ] && port=$(free_port)
    cport=$(free_port "$port")
    rc=0
    launch_broker "$dir" "$port" "$cport" || rc=$?
    [ "$rc" = 0 ] && break
    stop_broker "$dir" >/dev/null 2>&1 || true
    if [ "$rc" = 3 ] && [ "$auto_ports" = 1 ]; then
      log "port clash on attempt $attempt, retrying with other ports"
      continue
    fi
    break
  done
  if [ "$rc" != 0 ]; then
    # Kafka logs a long shutdown sequence after a startup failure, so the
    # cause is rarely in the tail: show the first errors, then the tail.
    log "broker failed to start; first errors in $dir/broker.log:"
    grep -E -A3 -m5 '\] (ERROR|FATAL) ' "$dir/broker.log" >&2 || true
    log "last lines of $dir/broker.log:"
    tail -n 15 "$dir/broker.log" >&2 || true
    [ -s "$dir/check.log" ] && { log "last metadata check said:"; tail -n 10 "$dir/check.log" >&2; }
    exit 1
  fi
  echo "127.0.0.1:$port" >"$dir/bootstrap"
  log "broker up in $((SECONDS - t0)) s: pid $(cat "$dir/broker.pid"), dir $dir, log $dir/broker.log"
  log "stop it with: $0 stop --dir $dir"
  echo "127.0.0.1:$port"
}

# SIGTERM lets Kafka shut down cleanly (a few seconds); SIGKILL after
# STOP_TIMEOUT so a wedged broker never hangs a test run.
stop_broker() {
  local dir=$1 pid deadline
  if ! broker_alive "$dir"; then
    rm -f "$dir/broker.pid"
    return 1
  fi
  pid=$(cat "$dir/broker.pid")
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  # pid_running rather than kill -0: where nothing reaps orphans (a container
  # whose pid 1 is not an init), the dead broker lingers as a zombie.
  while pid_running "$pid" && [ $SECONDS -lt $deadline ]; do
    sleep 0.2
  done
  if pid_running "$pid"; then
    log "broker pid $pid ignored SIGTERM for $STOP_TIMEOUT s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while pid_running "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  fi
  rm -f "$dir/broker.pid"
}

cmd_stop() {
  local dir=$DEFAULT_DIR purge=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=${2:?--dir needs a value}; shift 2 ;;
      --purge) purge=1; shift ;;
      *) die "stop: unknown argument $1" ;;
    esac
  done
  [ -d "$dir" ] || die "no such directory: $dir"
  dir=$(cd "$dir" && pwd)
  if stop_broker "$dir"; then
    log "broker in $dir stopped"
  else
    log "no broker running in $dir"
  fi
  rm -f "$dir/bootstrap"
  if [ "$purge" = 1 ]; then
    rm -rf "$dir"
  fi
}

# ---------------------------------------------------------------------------
# topics / class

cmd_topics() {
  local bootstrap="" action name="" partitions=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --bootstrap) bootstrap=${2:?--bootstrap needs a value}; shift 2 ;;
      *) break ;;
    esac
  done
  [ -n "$bootstrap" ] || die "topics needs --bootstrap ADDR"
  action=${1:-}; shift || true
  is_installed || die "Kafka is not installed: run '$0 install' first"
  case "$action" in
    create)
      name=${1:?topics create needs a topic NAME}; shift
      while [ $# -gt 0 ]; do
        case "$1" in
          --partitions) partitions=${2:?--partitions needs a value}; shift 2 ;;
          *) die "topics create: unknown argument $1" ;;
        esac
      done
      "${TOOLS_JAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
        --create --if-not-exists --topic "$name" \
        --partitions "$partitions" --replication-factor 1 ;;
    list)
      "${TOOLS_JAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --list ;;
    *) die "topics: expected 'create NAME [--partitions N]' or 'list'" ;;
  esac
}

cmd_class() {
  [ $# -ge 1 ] || die "class needs a MAIN_CLASS"
  is_installed || die "Kafka is not installed: run '$0 install' first"
  exec "${TOOLS_JAVA[@]}" "$@"
}

main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    topics) cmd_topics "$@" ;;
    class) cmd_class "$@" ;;
    -h|--help|help|"") usage ;;
    *) log "unknown command: $cmd"; usage ;;
  esac
}

main "$@"
