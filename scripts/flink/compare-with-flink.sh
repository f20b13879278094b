#!/usr/bin/env bash
# Runs ferrobeam's batch examples on Apache Flink (Beam's own Flink job
# server, a jar from Maven Central) and on ferrobeam, and checks that both
# wrote the same output (the same lines, sorted). The point: a pipeline you
# run on ferrobeam today runs unchanged on Flink when you outgrow one job
# server (docs/deploy.md, "When to move to Flink").
#
# NOT PART OF CI, AND NOT RUN ON THE PROJECT'S MACHINES: their Maven mirror
# does not serve the Flink job server jar (the download ends with "Could not
# find artifact", i.e. a 404), so there the script stops at the download
# with that message. `--reference direct` runs the same comparison machinery
# against Beam's DirectRunner instead of Flink (no Java needed); that is how
# the script itself was checked. Run it where Maven Central is reachable, or
# hand it a jar with FERROBEAM_FLINK_JAR.
#
#   scripts/flink/compare-with-flink.sh [--flink_version V] [--job_port P]
#                                       [--reference flink|direct] [--keep]
#
#   --flink_version V  the Flink line of the job server jar; one of those
#                      apache-beam publishes (FlinkRunnerOptions), default
#                      its newest (2.2 for apache-beam 2.77.0)
#   --job_port P       the Flink job server's Job API port (default 8099; it
#                      must be free: the script refuses to submit to a server
#                      it did not start)
#   --reference R      flink (default) or direct (Beam's DirectRunner)
#   --keep             keep the work directory (inputs, outputs, logs)
#
# What is compared (all batch, from files):
#   wordcount        examples/wordcount.py on examples/data/river.txt
#   wordcount-rides  the same pipeline on a generated 17k-line file
#   pricing          examples/pricing (fixed windows, triggers, a CombineFn,
#                    fileio.WriteToFiles) on rides from generate.py --seed 7;
#                    with --reference direct it is skipped: Beam's Python
#                    DirectRunner cannot run its processing-time trigger in
#                    batch (AttributeError in trigger.py)
# Flink runs them with --runner=PortableRunner --job_endpoint=localhost:PORT
# --environment_type=LOOPBACK (the SDK harness inside this process, as
# ferrobeam's README does it); ferrobeam with --runner=ferrobeam.FerrobeamRunner.
#
# Needs: bash, python3 with ferrobeam and apache-beam==2.77.0 installed
# (`pip install .`), and for Flink: Java 11+ (Flink 2.x: 17 recommended) and
# Maven (`mvn`, which fetches the jar with the machine's Maven settings).
#
# Exit status: 0 every comparison equal, 1 some output differs or a pipeline
# failed, 2 bad usage, 3 missing tools or the jar could not be had, 4 the
# Flink job server did not start.
#
# Environment:
#   PYTHON                 interpreter (default python3)
#   FERROBEAM_FLINK_CACHE  where the jar is kept (default ~/.cache/ferrobeam-flink)
#   FERROBEAM_FLINK_JAR    a job server jar already at hand (no download)
#   FERROBEAM_FLINK_START_TIMEOUT  seconds to wait for the job server (default 180)
#   FERROBEAM_COMPARE_TIMEOUT      seconds per pipeline run (default 1200)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
BEAM_VERSION=2.77.0
MIN_JAVA=11
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1
CACHE="${FERROBEAM_FLINK_CACHE:-$HOME/.cache/ferrobeam-flink}"
START_TIMEOUT="${FERROBEAM_FLINK_START_TIMEOUT:-180}"
RUN_TIMEOUT="${FERROBEAM_COMPARE_TIMEOUT:-1200}"

log() { printf 'compare-with-flink: %s\n' "$*" >&2; }
die() {
  local code=$1
  shift
  log "error: $*"
  exit "$code"
}
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

flink_version=""
job_port=8099
reference=flink
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --flink_version) [ $# -ge 2 ] || usage; flink_version=$2; shift 2 ;;
    --flink_version=*) flink_version=${1#*=}; shift ;;
    --job_port) [ $# -ge 2 ] || usage; job_port=$2; shift 2 ;;
    --job_port=*) job_port=${1#*=}; shift ;;
    --reference) [ $# -ge 2 ] || usage; reference=$2; shift 2 ;;
    --reference=*) reference=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
case "$reference" in
  flink | direct) ;;
  *) log "--reference must be flink or direct, not '$reference'"; usage ;;
esac
case "$job_port" in
  '' | *[!0-9]*) log "--job_port must be a number"; usage ;;
esac

# ---------------------------------------------------------------------------
# Python side: ferrobeam and the pinned Beam.

command -v "$PYTHON" >/dev/null 2>&1 || die 3 "$PYTHON not found (set PYTHON)"
installed_beam=$("$PYTHON" -c 'import apache_beam; print(apache_beam.__version__)' 2>/dev/null) ||
  die 3 "apache_beam is not importable with $PYTHON: pip install . (from $REPO)"
[ "$installed_beam" = "$BEAM_VERSION" ] ||
  die 3 "apache-beam $BEAM_VERSION expected (ferrobeam's pin, and the jar's version), found $installed_beam"
"$PYTHON" -c 'import ferrobeam._native' 2>/dev/null ||
  die 3 "ferrobeam is not installed for $PYTHON: pip install . (from $REPO)"

# The Flink lines this Beam publishes job servers for; the newest by default,
# as Beam's own FlinkRunner picks.
published=$("$PYTHON" -c '
from apache_beam.options.pipeline_options import FlinkRunnerOptions
print(" ".join(FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS))' 2>/dev/null)
if [ -z "$flink_version" ]; then
  flink_version=${published##* }
fi
case " $published " in
  *" $flink_version "*) ;;
  *) die 2 "apache-beam $BEAM_VERSION publishes Flink job servers for: $published (not $flink_version)" ;;
esac

ARTIFACT="org.apache.beam:beam-runners-flink-${flink_version}-job-server:${BEAM_VERSION}"
JAR_NAME="beam-runners-flink-${flink_version}-job-server-${BEAM_VERSION}.jar"

# ---------------------------------------------------------------------------
# Java side: the job server jar, fetched once into the cache.

# shellcheck source=scripts/java-version.sh
. "$REPO/scripts/java-version.sh"

ensure_java() {
  command -v java >/dev/null 2>&1 ||
    die 3 "java not found: Beam's Flink job server needs a Java $MIN_JAVA+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
  local major
  major=$(java_major)
  if [ -z "$major" ] || [ "$major" -lt "$MIN_JAVA" ]; then
    die 3 "the Flink job server needs Java $MIN_JAVA+, found: $(java -version 2>&1 | head -n1)"
  fi
}

# Prints the jar's path on stdout.
fetch_jar() {
  if [ -n "${FERROBEAM_FLINK_JAR:-}" ]; then
    [ -f "$FERROBEAM_FLINK_JAR" ] || die 3 "FERROBEAM_FLINK_JAR=$FERROBEAM_FLINK_JAR is not a file"
    echo "$FERROBEAM_FLINK_JAR"
    return
  fi
  local jar="$CACHE/$JAR_NAME"
  if [ -s "$jar" ] && unzip_ok "$jar"; then
    log "cached: $jar"
    echo "$jar"
    return
  fi
  command -v mvn >/dev/null 2>&1 ||
    die 3 "mvn not found: it downloads $ARTIFACT from Maven Central (apt-get install maven), or set FERROBEAM_FLINK_JAR to a jar you have"
  mkdir -p "$CACHE"
  local staging mvn_log
  staging=$(mktemp -d "$CACHE/download.XXXXXX")
  mvn_log="$CACHE/download.log"
  log "downloading $ARTIFACT (about 200 MB) with Maven; log: $mvn_log"
  # The local repository lives in the cache too: ~/.m2 is neither used nor
  # filled, and the jar is copied out of it to $CACHE. -U: ask again even if
  # an earlier attempt's "not found" is cached there.
  if ! mvn -B -q -U -Dstyle.color=never "$DEPENDENCY_PLUGIN:copy" \
    -Dartifact="$ARTIFACT:jar" -Dtransitive=false \
    -DoutputDirectory="$staging" -Dmaven.repo.local="$CACHE/m2" >"$mvn_log" 2>&1; then
    rm -rf "$staging"
    log "the download of $ARTIFACT failed; Maven said:"
    { grep -m1 'Could not\|ERROR\]' "$mvn_log" || tail -n 3 "$mvn_log"; } |
      sed 's/\x1b\[[0-9;]*m//g; s/^/    /' >&2
    if grep -q 'Could not find artifact\|was not found\|404' "$mvn_log"; then
      log "the repository does not have it (404). That is expected on ferrobeam's"
      log "development machines, whose Maven mirror does not serve this jar. Run"
      log "this script where Maven Central is reachable, or download the jar there"
      log "and set FERROBEAM_FLINK_JAR=/path/to/$JAR_NAME."
      log "(--reference direct runs the comparison against Beam's DirectRunner, without Java.)"
    fi
    exit 3
  fi
  [ -s "$staging/$JAR_NAME" ] || die 3 "Maven reported success but $staging/$JAR_NAME is missing"
  unzip_ok "$staging/$JAR_NAME" || die 3 "$staging/$JAR_NAME is not a readable jar"
  mv "$staging/$JAR_NAME" "$jar"
  rm -rf "$staging"
  echo "$jar"
}

# A jar is a zip: a truncated download fails to list.
unzip_ok() {
  "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).testzip() is None or sys.exit(1)' "$1" 2>/dev/null
}

port_open() {
  "$PYTHON" -c '
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"
}

free_port() {
  "$PYTHON" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------
# Work directory, and the Flink job server's lifetime.

WORK=""
FLINK_PID=""
cleanup() {
  local status=$?
  if [ -n "$FLINK_PID" ] && kill -0 "$FLINK_PID" 2>/dev/null; then
    log "stopping the Flink job server (pid $FLINK_PID)"
    kill "$FLINK_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do
      kill -0 "$FLINK_PID" 2>/dev/null || break
      sleep 1
    done
    kill -9 "$FLINK_PID" 2>/dev/null || true
  fi
  if [ -z "$WORK" ]; then
    return
  elif [ "$keep" = 1 ] || [ "$status" != 0 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

start_flink() {
  local jar=$1
  if port_open "$job_port"; then
    die 4 "something already listens on localhost:$job_port (a ferrobeam job server?); stop it or pass --job_port"
  fi
  local artifact_port expansion_port
  artifact_port=$(free_port)
  expansion_port=$(free_port)
  log "starting the Flink $flink_version job server on localhost:$job_port (embedded Flink cluster, [local]); log: $WORK/flink-job-server.log"
  java -jar "$jar" \
    --flink-master "[local]" \
    --job-host localhost \
    --job-port "$job_port" \
    --artifact-port "$artifact_port" \
    --expansion-port "$expansion_port" \
    --artifacts-dir "$WORK/flink-artifacts" \
    >"$WORK/flink-job-server.log" 2>&1 &
  FLINK_PID=$!
  local waited=0
  until port_open "$job_port"; do
    if ! kill -0 "$FLINK_PID" 2>/dev/null; then
      tail -n 20 "$WORK/flink-job-server.log" >&2 || true
      FLINK_PID=""
      die 4 "the Flink job server exited before listening (log above)"
    fi
    if [ "$waited" -ge "$START_TIMEOUT" ]; then
      tail -n 20 "$WORK/flink-job-server.log" >&2 || true
      die 4 "the Flink job server did not listen on localhost:$job_port within ${START_TIMEOUT}s"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "Flink job server ready after ${waited}s"
}

if [ "$reference" = flink ]; then
  ensure_java
  jar=$(fetch_jar)
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferrobeam-flink-compare.XXXXXX")
if [ "$reference" = flink ]; then
  start_flink "$jar"
  REFERENCE_ARGS=(--runner=PortableRunner "--job_endpoint=localhost:$job_port" --environment_type=LOOPBACK)
  REFERENCE_NAME="Flink $flink_version"
else
  REFERENCE_ARGS=(--runner=DirectRunner)
  REFERENCE_NAME="DirectRunner"
fi
FERROBEAM_ARGS=(--runner=ferrobeam.FerrobeamRunner)

# ---------------------------------------------------------------------------
# The runs and the comparisons.

failures=0
results=()

# run_pipeline NAME SIDE DIR COMMAND...: runs one pipeline in DIR, logging.
run_pipeline() {
  local name=$1 side=$2 dir=$3
  shift 3
  local log_file="$WORK/$name.$side.log" label=ferrobeam
  [ "$side" = reference ] && label=$REFERENCE_NAME
  log "$name on $label"
  if (cd "$dir" && timeout "$RUN_TIMEOUT" "$@") >"$log_file" 2>&1; then
    return 0
  fi
  log "$name failed on $label; the end of $log_file:"
  tail -n 15 "$log_file" | sed 's/^/    /' >&2
  return 1
}

# sorted_lines OUT PATHS...: every line of every file under PATHS, sorted
# bytewise (hidden files and directories, e.g. fileio's temporaries, left out).
sorted_lines() {
  local out=$1
  shift
  "$PYTHON" - "$out" "$@" <<'EOF'
import glob, os, sys
out, patterns = sys.argv[1], sys.argv[2:]
files = []
for pattern in patterns:
    for path in sorted(glob.glob(pattern)):
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                files += [os.path.join(root, n) for n in names if not n.startswith(".")]
        else:
            files.append(path)
lines = []
for path in files:
    with open(path, "rb") as f:
        lines += f.read().splitlines()
with open(out, "wb") as f:
    for line in sorted(lines):
        f.write(line + b"\n")
print(len(files), len(lines))
EOF
}

# compare NAME: compares WORK/NAME/{reference,ferrobeam} outputs (globs below).
compare() {
  local name=$1 ref_glob=$2 fb_glob=$3
  local a="$WORK/$name.reference.sorted" b="$WORK/$name.ferrobeam.sorted" ref_count fb_count
  ref_count=$(sorted_lines "$a" "$ref_glob")
  fb_count=$(sorted_lines "$b" "$fb_glob")
  local ref_lines=${ref_count#* } fb_lines=${fb_count#* }
  if [ "$ref_lines" = 0 ]; then
    results+=("$name: FAILED ($REFERENCE_NAME wrote nothing)")
    failures=$((failures + 1))
  elif cmp -s "$a" "$b"; then
    results+=("$name: same ($fb_lines lines; files: ${ref_count%% *} on $REFERENCE_NAME, ${fb_count%% *} on ferrobeam)")
  else
    results+=("$name: DIFFERENT ($ref_lines lines on $REFERENCE_NAME, $fb_lines on ferrobeam; diff in $WORK/$name.diff)")
    diff "$a" "$b" >"$WORK/$name.diff" || true
    head -n 10 "$WORK/$name.diff" | sed 's/^/    /' >&2
    failures=$((failures + 1))
    keep=1
  fi
}

# compare_example NAME DIR OUTPUT_GLOB_SUFFIX ARGS...: ARGS contain the token
# @OUT@, replaced by each side's output location.
compare_example() {
  local name=$1 dir=$2 suffix=$3
  shift 3
  local side ok=1
  for side in reference ferrobeam; do
    local out="$WORK/$name/$side" args=() arg
    mkdir -p "$WORK/$name"
    for arg in "$@"; do
      args+=("${arg//@OUT@/$out}")
    done
    if [ "$side" = reference ]; then
      args+=("${REFERENCE_ARGS[@]}")
    else
      args+=("${FERROBEAM_ARGS[@]}")
    fi
    local label=$REFERENCE_NAME
    [ "$side" = ferrobeam ] && label=ferrobeam
    if ! run_pipeline "$name" "$side" "$dir" "${args[@]}"; then
      results+=("$name: FAILED on $label (log: $WORK/$name.$side.log)")
      failures=$((failures + 1))
      ok=0
      keep=1
    fi
  done
  if [ "$ok" = 1 ]; then
    compare "$name" "$WORK/$name/reference$suffix" "$WORK/$name/ferrobeam$suffix"
  fi
}

RIDES="$WORK/rides.jsonl"
"$PYTHON" "$REPO/examples/pricing/generate.py" --minutes 10 --seed 7 --out "$RIDES" >/dev/null 2>&1 ||
  die 1 "examples/pricing/generate.py failed"

compare_example wordcount "$REPO" "-*" \
  "$PYTHON" examples/wordcount.py --input "$REPO/examples/data/river.txt" --output "@OUT@"
compare_example wordcount-rides "$REPO" "-*" \
  "$PYTHON" examples/wordcount.py --input "$RIDES" --output "@OUT@"
if [ "$reference" = direct ]; then
  results+=("pricing: skipped (Beam's DirectRunner cannot run its processing-time trigger in batch)")
else
  # The pricing package is imported from its directory, by both sides'
  # workers (LOOPBACK: this process; ferrobeam: its worker processes).
  export PYTHONPATH="$REPO/examples/pricing${PYTHONPATH:+:$PYTHONPATH}"
  compare_example pricing "$REPO/examples/pricing" "" \
    "$PYTHON" -m pricing.pipeline --rides "$RIDES" --output "@OUT@/"
fi

echo
echo "ferrobeam vs $REFERENCE_NAME (apache-beam $BEAM_VERSION):"
for line in "${results[@]}"; do
  echo "  $line"
done
if [ "$failures" -gt 0 ]; then
  exit 1
fi
