#!/usr/bin/env bash
# tests/e2e once more, against a real kube-apiserver (etcd + kube-apiserver from ../shared/k8s,
# started here in a temporary directory on free ports and stopped afterwards). Where
# ../shared/k8s is absent (a user's checkout) this is skipped: the emulator run covers the suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
REALK8S=../shared/k8s/realk8s
if [ ! -f "$REALK8S" ]; then
  echo "e2e against a real API server: skipped ($REALK8S not found; the e2e suite ran on the emulator)"
  exit 0
fi
REALK8S=$(cd "$(dirname "$REALK8S")" && pwd)/realk8s
DIR=$(mktemp -d "${TMPDIR:-/tmp}/realk8s.XXXXXX")
# three free ports, so that another instance on this machine (6443, 2379, 2380) is no obstacle
read -r K8S_PORT ETCD_PORT ETCD_PEER_PORT < <(.venv/bin/python - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
export K8S_PORT ETCD_PORT ETCD_PEER_PORT
stop() { bash "$REALK8S" down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap stop EXIT
bash "$REALK8S" up "$DIR"
WHC_E2E_KUBECONFIG="$DIR/kubeconfig" .venv/bin/pytest -q -p no:cacheprovider --durations=5 tests/e2e "$@"
