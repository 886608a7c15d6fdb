#!/usr/bin/env bash
# Create .venv-pylibp2p (repo root) with libp2p==0.8.1 from PyPI on python3.11.
# Idempotent: a finished venv is left alone (a stamp file records the pinned version).
# py-libp2p pins its own trio/protobuf versions, so it never goes into the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY="${PYLIBP2P_PYTHON:-python3.11}"
VENV=".venv-pylibp2p"
VERSION="0.8.1"
STAMP="$VENV/.installed-libp2p-$VERSION"

if [[ -f "$STAMP" ]] && "$VENV/bin/python" -c "import libp2p" 2>/dev/null; then
    exit 0
fi
if ! command -v "$PY" >/dev/null; then
    echo "setup.sh: $PY not found (set PYLIBP2P_PYTHON to a Python 3.11 interpreter)" >&2
    exit 1
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "libp2p==$VERSION"
"$VENV/bin/python" -c "import libp2p" >/dev/null
touch "$STAMP"
