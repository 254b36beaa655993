#!/usr/bin/env bash
# Creates the virtualenv the Snowflake integration tests run the emulator from: fakesnow in
# server mode (tests/support/snowflake_emulator.py starts it as a subprocess). Also makes sure
# the openssl command is there: the tests check key fingerprints with Snowflake's documented
# openssl recipe.
#
# fakesnow lives in its own virtualenv because its duckdb/sqlglot pins clash with the BigQuery
# emulator's, and it needs snowflake-connector-python below 5 (it imports a module 5.x removed).
# Idempotent: a fast no-op when the virtualenv already holds the pinned version.
set -euo pipefail

FAKESNOW_VERSION=0.12.1
CONNECTOR_SPEC='snowflake-connector-python>=3.12,<5'

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$root/.cache/venvs/fakesnow"
stamp="$venv/.installed-fakesnow-$FAKESNOW_VERSION"

if ! command -v openssl >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-snowflake-emulator: openssl is not installed and this needs root (apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi

if [[ -f $stamp && -x $venv/bin/fakesnow ]]; then
    exit 0
fi

# shellcheck source=scripts/ci/venv.sh
source "$root/scripts/ci/venv.sh"
fresh_venv "$root" "$venv" "fakesnow[server]==$FAKESNOW_VERSION" "$CONNECTOR_SPEC"

# Smoke check: the server module imports (it fails at import with an incompatible connector).
"$venv/bin/python" -c 'import fakesnow.server, snowflake.connector' >/dev/null
touch "$stamp"
echo "install-snowflake-emulator: fakesnow $FAKESNOW_VERSION in $venv"
