#!/usr/bin/env bash
# Keep the two copies of the CRD identical.
#
#   scripts/ci/sync-crd.sh            copy the packaged CRD (the one to edit) to crds/
#   scripts/ci/sync-crd.sh --reverse  copy crds/ back into the package
#   scripts/ci/sync-crd.sh --check    exit 1 when the copies differ (for CI)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
packaged="$root/operator/warehouse_operator/data/crd.yaml"
published="$root/crds/warehouseconnections.warehouse-operator.io.yaml"

case "${1:-}" in
  "")
    mkdir -p "$(dirname "$published")"
    cp "$packaged" "$published"
    echo "copied $packaged -> $published"
    ;;
  --reverse)
    cp "$published" "$packaged"
    echo "copied $published -> $packaged"
    ;;
  --check)
    if cmp -s "$packaged" "$published"; then
      echo "CRD copies are identical"
    else
      echo "CRD copies differ: edit $packaged and run scripts/ci/sync-crd.sh" >&2
      diff -u "$packaged" "$published" >&2 || true
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 [--reverse|--check]" >&2
    exit 2
    ;;
esac
# and the installers' copies (kustomize base, Helm chart)
if [[ ${1:-} == --check ]]; then bash "$root/deploy/sync-crds.sh" --check; else bash "$root/deploy/sync-crds.sh"; fi
