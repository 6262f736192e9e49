#!/usr/bin/env bash
# LoRA GUI launcher for Linux and macOS. Double-click it (or run ./launch.sh in a terminal):
# the first start creates .venv and installs requirements.txt (a few minutes), later starts are
# quick. Then the app starts and your browser opens http://127.0.0.1:7860.
# Extra arguments go to app.py, e.g.  ./launch.sh --port 7861   or   ./launch.sh --lang ja
# NVIDIA GPU on Linux: run once as  TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 ./launch.sh
set -u
cd "$(dirname "$0")" || exit 1

fail() {
  echo
  echo "ERROR: $1"
  if [ -t 0 ]; then read -r -p "Press Enter to close this window." _; fi
  exit 1
}

# The first Python 3.10+ that actually runs (PYTHON=/path/to/python overrides the search).
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3 python python3.13 python3.12 python3.11 python3.10; do
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || fail "Python 3.10 or newer is needed. Install it from https://www.python.org/ and start again."

if [ ! -x .venv/bin/python ]; then
  echo "First start: creating the Python environment in .venv ..."
  "$PYTHON" -m venv .venv || fail "could not create .venv (on Debian/Ubuntu: sudo apt install python3-venv)."
fi
VPY=.venv/bin/python

if ! "$VPY" -m lora_gui.stamp check; then
  echo "Installing the required packages (first start, or requirements.txt changed). This can take a while ..."
  "$VPY" -m pip install --upgrade pip >/dev/null 2>&1
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$VPY" -m pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL" || fail "installing torch from $TORCH_INDEX_URL failed."
  fi
  "$VPY" -m pip install -r requirements.txt || fail "installing the requirements failed (see the messages above)."
  "$VPY" -m lora_gui.stamp write
fi

# ./launch.sh --setup-only: install and stop (run_tests.sh uses this).
if [ "${1:-}" = "--setup-only" ]; then exit 0; fi

"$VPY" app.py --inbrowser "$@" || fail "the app stopped with an error (see the messages above)."
