#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs first:
#   - the app's .venv and requirements (the same setup ./launch.sh does),
#   - the test packages (requirements-test.txt: pytest, Playwright's Python driver),
#   - Debian's Chromium for the browser tests, and CJK fonts so Japanese screenshots are readable
#     (Playwright's own browser download is not used).
# System packages come from apt-get (as root, or through sudo). Where that is not possible the
# browser tests are skipped with the reason, and everything else still runs.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k engine
set -euo pipefail
cd "$(dirname "$0")"

apt_packages=()
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt_packages+=(python3-venv)  # Debian's python3 cannot create .venv without it
fi
if [ ! -x "${LORA_GUI_CHROMIUM:-/usr/bin/chromium}" ]; then
  apt_packages+=(chromium)
fi
if ! fc-list :lang=ja 2>/dev/null | grep -q .; then
  apt_packages+=(fonts-noto-cjk)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || command -v sudo >/dev/null 2>&1; }; then
    echo "Installing system packages: ${apt_packages[*]}"
    $SUDO apt-get update -q || echo "WARNING: apt-get update failed"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_packages[@]}" \
      || echo "WARNING: could not install ${apt_packages[*]}; the browser tests may be skipped"
  else
    echo "WARNING: ${apt_packages[*]} missing and apt-get (as root or with sudo) is not available;" \
         "the browser tests will be skipped"
  fi
fi

./launch.sh --setup-only
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt

exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
