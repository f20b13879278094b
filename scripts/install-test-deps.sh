#!/usr/bin/env bash
# Installs the system packages the tests need beyond the build's
# (scripts/install-system-deps.sh), on Debian/Ubuntu (apt-get). Idempotent:
# does nothing when they are already there.
#
#   chromium   the browser tests/test_dashboard_browser.py drives with
#              Playwright (the `playwright` package of the `test` extra;
#              its own browser downloads, `playwright install`, are not
#              used). The tests look for /usr/bin/chromium.
#   iproute2   `ip netns`, with which tests/test_multihost.py makes its
#              hosts (as root; skipped otherwise).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

# shellcheck source=scripts/apt-install.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
if ! command -v ip >/dev/null; then
  apt_install install-test-deps "ip (iproute2)" \
    "install iproute2, or the multi-host test is skipped." iproute2
fi
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
apt_install install-test-deps "$CHROMIUM" \
  "install Chromium there, or the dashboard's browser tests are skipped." chromium
if [ ! -x "$CHROMIUM" ]; then
  echo "install-test-deps: the chromium package did not provide $CHROMIUM" >&2
  exit 1
fi
