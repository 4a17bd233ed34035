#!/usr/bin/env bash
# Create clients/python/.venv if missing, install the client and pytest into it,
# and run the test suite against a real server (/tmp/inferwire-server, or
# $INFERWIRE_SERVER). Extra arguments are passed to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e "$here" pytest

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
