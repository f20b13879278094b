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
# shellcheck source=scripts/apt-install.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
apt_install install-system-deps libclang \
  "install libclang (e.g. clang's development package) or set LIBCLANG_PATH." libclang-dev
