#!/usr/bin/env bash
# Installs the PostgreSQL server binaries the test suite starts throwaway clusters from
# (tests/support/pgserver.py). Idempotent: a fast no-op when an initdb is already present.
#
# The suite never uses the cluster Debian creates on install ("main", port 5432): creation
# of that cluster is turned off before installing, and if one exists anyway it is left
# stopped.
set -euo pipefail

have_initdb() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_initdb; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-postgres: PostgreSQL is not installed and this needs root (apt-get)" >&2
    exit 1
fi

# postgresql-common reads drop-ins from this folder when it creates clusters: none wanted.
mkdir -p /etc/postgresql-common/createcluster.d
cat >/etc/postgresql-common/createcluster.d/50-no-main-cluster.conf <<'EOF'
# The test suite starts its own clusters; do not create (or start) a default one.
create_main_cluster = false
EOF

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    postgresql >/dev/null

if ! have_initdb; then
    echo "install-postgres: apt-get installed postgresql but no initdb was found" >&2
    exit 1
fi

# Should a cluster exist anyway (created by an older postgresql-common), make sure it is
# not running: it would only hold a port and memory.
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters --no-header 2>/dev/null | while read -r version name _port status _rest; do
        if [[ $status == online* ]]; then
            pg_ctlcluster "$version" "$name" stop || true
        fi
    done || true
fi

echo "install-postgres: installed $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n1)"
