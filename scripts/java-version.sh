# shellcheck shell=bash
# Sourced by the scripts that need a Java runtime (scripts/kafka/kafka.sh,
# scripts/flink/compare-with-flink.sh).

# java_major: the major version of `java` on the PATH. `java -version`
# prints e.g. 'openjdk version "17.0.15" ...' or '"1.8.0_392"'.
java_major() {
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
  case "$v" in
    1.*) v=${v#1.}; echo "${v%%.*}" ;;
    *) echo "${v%%[.+-]*}" ;;
  esac
}
