#!/usr/bin/env bash
# Copies the CustomResourceDefinitions from crds/ (the one source) into the two installers
# that cannot reference files outside their own folder:
#   deploy/manifests/crds/               kustomize loads no file from outside its base
#   deploy/helm/warehouse-operator/crds/ a packaged chart carries only its own files
#
#   deploy/sync-crds.sh           copy
#   deploy/sync-crds.sh --check   exit 1 when a copy differs from crds/ (tests/deploy checks too)
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
exit $status
