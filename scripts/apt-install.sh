# Sourced by the install scripts: apt_install WHO WHAT ADVICE PACKAGE...
# installs Debian packages with apt-get (through sudo unless root), or, on a
# system without apt-get, says what is missing and how to get it, and fails.
#   WHO     the calling script's name, for its messages
#   WHAT    what is missing, e.g. "libclang"
#   ADVICE  what to do instead where there is no apt-get
apt_install() {
  local who=$1 what=$2 advice=$3
  shift 3
  if ! command -v apt-get >/dev/null; then
    echo "$who: $what is missing and this is not a Debian-like system;" >&2
    echo "$advice" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
  fi
  echo "$who: installing $* with apt-get" >&2
  $sudo apt-get update >&2
  $sudo apt-get install -y --no-install-recommends "$@" >&2
}
