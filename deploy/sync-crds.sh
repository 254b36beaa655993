#!/usr/bin/env bash
# crds/ is the one source of the CustomResourceDefinitions (`make crd` runs this script). It
# copies them where kubectl -f crds/ cannot reach:
#   deploy/manifests/crds/                      kustomize loads no file from outside its base
#   deploy/helm/warehouse-operator/crds/        a packaged chart carries only its own files
#   operator/warehouse_operator/data/crd.yaml   the wheel: `warehouse-operator crd` prints it
#
#   deploy/sync-crds.sh           copy
#   deploy/sync-crds.sh --check   exit 1 when a copy differs from crds/ (tests check too)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
targets=("$root/deploy/manifests/crds" "$root/deploy/helm/warehouse-operator/crds")
check=false
[[ ${1:-} == --check ]] && check=true

shopt -s nullglob
sources=("$root"/crds/*.yaml)
if ((${#sources[@]} == 0)); then
    echo "sync-crds: no CRD in $root/crds" >&2
    exit 1
fi

status=0
for target in "${targets[@]}"; do
    mkdir -p "$target"
    for src in "${sources[@]}"; do
        dest="$target/$(basename "$src")"
        if $check; then
            if ! cmp -s "$src" "$dest"; then
                echo "sync-crds: ${dest#"$root"/} differs from ${src#"$root"/}" >&2
                status=1
            fi
        else
            cp "$src" "$dest"
        fi
    done
    # A CRD removed from crds/ goes from the copies too.
    for dest in "$target"/*.yaml; do
        if [[ ! -f $root/crds/$(basename "$dest") ]]; then
            if $check; then
                echo "sync-crds: ${dest#"$root"/} has no source in crds/" >&2
                status=1
            else
                rm -f "$dest"
            fi
        fi
    done
done
# The package ships the one CRD there is under a fixed name.
packaged="$root/operator/warehouse_operator/data/crd.yaml"
if ((${#sources[@]} != 1)); then
    echo "sync-crds: the package holds one CRD; crds/ has ${#sources[@]}" >&2
    status=1
elif $check; then
    if ! cmp -s "${sources[0]}" "$packaged"; then
        echo "sync-crds: ${packaged#"$root"/} differs from ${sources[0]#"$root"/}" >&2
        status=1
    fi
else
    mkdir -p "$(dirname "$packaged")"
    cp "${sources[0]}" "$packaged"
fi
exit $status
