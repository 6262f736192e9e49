#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs first:
#   - the app's .venv and requirements (the same setup ./launch.sh does),
#   - the test packages (requirements-test.txt: pytest, Playwright's Python driver),
#   - Debian's Chromium for the browser tests (Playwright's own browser download is not used).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k engine
set -euo pipefail
cd "$(dirname "$0")"

./launch.sh --setup-only
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium fonts-noto-cjk
fi

exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
