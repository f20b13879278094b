#!/usr/bin/env bash
# Installs the system packages the tests need beyond the build's
# (scripts/install-system-deps.sh), on Debian/Ubuntu (apt-get). Idempotent:
# does nothing when they are already there.
#
#   chromium   the browser tests/test_dashboard_browser.py drives with
#              Playwright (the `playwright` package of the `test` extra;
#              its own browser downloads, `playwright install`, are not
#              used). The tests look for /usr/bin/chromium.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-test-deps: $CHROMIUM is missing and this is not a Debian-like system;" >&2
  echo "install Chromium there, or the dashboard's browser tests are skipped." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
echo "install-test-deps: installing chromium with apt-get" >&2
$SUDO apt-get update >&2
$SUDO apt-get install -y --no-install-recommends chromium >&2
if [ ! -x "$CHROMIUM" ]; then
  echo "install-test-deps: the chromium package did not provide $CHROMIUM" >&2
  exit 1
fi
