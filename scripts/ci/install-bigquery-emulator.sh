#!/usr/bin/env bash
# Creates the BigQuery emulator's own virtualenv (.cache/venvs/bqemu) for the integration tests
# (tests/support/bigquery_emulator.py starts `crucible serve --dialect bigquery` from it).
#
# Its own virtualenv because the emulator pins duckdb and sqlglot versions that clash with other
# test peers. Idempotent: a fast no-op when the virtualenv already holds this exact version.
set -euo pipefail

PACKAGE='crucible-emulator[server]==0.1.0a2'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$ROOT/.cache/venvs/bqemu"
STAMP="$VENV/.installed"

installed() {
    [[ -x $VENV/bin/crucible && -f $STAMP && $(<"$STAMP") == "$PACKAGE" ]]
}

if installed; then
    exit 0
fi

# One installer at a time (two test runs may start together); the second finds it done.
mkdir -p "$ROOT/.cache"
exec 9>"$ROOT/.cache/bqemu.lock"
flock 9
if installed; then
    exit 0
fi

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [[ -n $candidate ]] || continue
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! PY=$(pick_python); then
    echo "install-bigquery-emulator: needs Python 3.11+ with the venv module" >&2
    exit 1
fi

rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
# --pre: the emulator is only published as pre-releases
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --pre "$PACKAGE"
"$VENV/bin/python" -c 'import crucible.server.app, uvicorn' # fail here, not in the tests
echo "$PACKAGE" >"$STAMP"
echo "install-bigquery-emulator: installed $PACKAGE in $VENV"
