#!/usr/bin/env bash
# End-to-end check of kafka.sh, with Kafka's own CLI classes only (no Python
# or other client needed):
#   install; start two brokers at once (own dirs, own ports); on each, create
#   a 3-partition topic, produce 5 keyed messages, consume them back with a
#   consumer group; stop both and check that no broker process is left.
#
#   bash scripts/kafka/selftest.sh
#
# Honours FERROBEAM_KAFKA_HOME like kafka.sh (point it at an empty dir to time
# a cold install). Takes ~25 s with a warm cache on 2 cores. Exits non-zero on
# the first failure; prints timings as it goes.
set -euo pipefail

K="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrobeam-kafka-selftest.XXXXXX")
D1="$WORK/broker1"
D2="$WORK/broker2"

say() { printf '\n== %s\n' "$*"; }
fail() { printf "FAILED: %s (logs in %s)\n" "$*" "$WORK" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
  bash "$K" stop --dir "$D1" >/dev/null 2>&1 || true
  bash "$K" stop --dir "$D2" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "install"
t=$(now); bash "$K" install; echo "install: $(since "$t") s"
t=$(now); bash "$K" install; echo "second install (cache complete): $(since "$t") s"

say "start two brokers at once"
t=$(now)
bash "$K" start --dir "$D1" >"$WORK/b1.out" &
p1=$!
bash "$K" start --dir "$D2" >"$WORK/b2.out" &
p2=$!
wait "$p1" || fail "broker 1 did not start"
wait "$p2" || fail "broker 2 did not start"
B1=$(cat "$WORK/b1.out")
B2=$(cat "$WORK/b2.out")
echo "both up in $(since "$t") s: $B1 and $B2"
[ "$B1" != "$B2" ] || fail "both brokers report the same address"

check_broker() {
  local b=$1 topic=$2 out n
  say "broker $b: topic $topic with 3 partitions, produce 5, consume 5"
  bash "$K" topics --bootstrap "$b" create "$topic" --partitions 3
  bash "$K" class org.apache.kafka.tools.TopicCommand --bootstrap-server "$b" \
    --describe --topic "$topic" | grep -q 'PartitionCount: 3' || fail "$topic has not 3 partitions"
  printf 'k1:one\nk2:two\nk3:three\nk4:four\nk5:five\n' |
    bash "$K" class kafka.tools.ConsoleProducer --bootstrap-server "$b" --topic "$topic" \
      --property parse.key=true --property key.separator=: --producer-property acks=all
  out=$(bash "$K" class org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$b" \
          --topic "$topic" --group "selftest-$topic" --from-beginning --max-messages 5 \
          --timeout-ms 30000 --property print.key=true --property key.separator=: 2>/dev/null)
  echo "$out"
  n=$(printf '%s\n' "$out" | sort | tr '\n' ' ')
  [ "$n" = "k1:one k2:two k3:three k4:four k5:five " ] || fail "consumed '$n'"
}
t=$(now)
check_broker "$B1" selftest-a
check_broker "$B2" selftest-b
echo "topic/produce/consume on both: $(since "$t") s"
# Each broker is its own cluster: broker 2 must not know broker 1's topic.
if bash "$K" topics --bootstrap "$B2" list | grep -qx selftest-a; then
  fail "broker 2 lists broker 1's topic"
fi

say "stop both"
pid1=$(cat "$D1/broker.pid")
pid2=$(cat "$D2/broker.pid")
t=$(now)
bash "$K" stop --dir "$D1"
bash "$K" stop --dir "$D2"
echo "stopped in $(since "$t") s"
for p in "$pid1" "$pid2"; do
  # /proc state, not kill -0: a reaped-late zombie is not a running broker.
  state=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || true)
  if [ -n "$state" ] && [ "$state" != Z ]; then fail "broker pid $p still running"; fi
done
if [ -e "$D1/broker.pid" ] || [ -e "$D2/broker.pid" ]; then fail "pid file left behind"; fi
rm -rf "$WORK"
trap - EXIT
say "OK"
