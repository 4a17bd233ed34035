#!/usr/bin/env bash
# Create clients/python/.venv if missing, install the client with its test extras
# (pytest, mypy, protobuf stubs) into it, type-check src/ with `mypy --strict`
# (configured in pyproject.toml), and then run the test suite against a real server
# (/tmp/inferwire-server, or $INFERWIRE_SERVER). Extra arguments are passed to pytest.
# Fails without running pytest if mypy finds an error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e "$here[test]"

cd "$here"
# Before pytest, so that pytest's summary stays the last one printed (scripts/test reads it).
echo "mypy --strict src/"
if ! "$venv/bin/python" -m mypy; then
    echo "mypy found type errors in src/; not running pytest" >&2
    exit 1
fi
exec "$venv/bin/python" -m pytest "$@"
