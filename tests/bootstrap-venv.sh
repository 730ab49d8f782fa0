#!/usr/bin/env bash
# Create the project's virtual environment from the pinned requirements.
# Usage: bootstrap-venv.sh PYTHON VENV
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap-venv: installing python3-venv" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "bootstrap-venv: $python cannot create virtual environments; install python3-venv (Debian/Ubuntu) and rerun." >&2
    exit 1
  fi
fi
# PYTHON may be the venv's own interpreter (make puts .venv/bin first on PATH): build from the
# interpreter it was made from, which survives the rm below.
python=$("$python" -c 'import sys; print(getattr(sys, "_base_executable", "") or sys.executable)')
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r requirements-dev.txt
