#!/usr/bin/env bash
# Installs the system packages building ferrobeam needs beyond Python and
# Rust, on Debian/Ubuntu (apt-get). Idempotent: does nothing when they are
# already there.
#
#   libclang   librocksdb-sys generates its Rust bindings with bindgen,
#              which loads libclang (package libclang-dev).
set -euo pipefail

have_libclang() {
  ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 ||
    ldconfig -p 2>/dev/null | grep -q 'libclang\.so' ||
    [ -n "${LIBCLANG_PATH:-}" ]
}

if have_libclang; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-system-deps: libclang is missing and this is not a Debian-like system;" >&2
  echo "install libclang (e.g. clang's development package) or set LIBCLANG_PATH." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
echo "install-system-deps: installing libclang-dev with apt-get" >&2
$SUDO apt-get update >&2
$SUDO apt-get install -y --no-install-recommends libclang-dev >&2
