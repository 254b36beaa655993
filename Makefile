# warehouse-operator: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup test-deps lint typecheck contracts unit integration e2e e2e-real-apiserver crd docs bench-smoke clean

# The virtualenv, reinstalled when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Run the operator against the current kubeconfig: installs the CRD first when kubectl is there.
run: $(STAMP)
	@if command -v kubectl >/dev/null 2>&1; then kubectl apply -f crds/; else echo "kubectl not found: apply crds/ yourself"; fi
	$(BIN)/warehouse-operator run $(ARGS)

# Everything the tests need that is not a Python package of the project: database server,
# emulators in their own virtualenvs, deployment tools. Each script is idempotent.
test-deps: $(STAMP)
	@for script in scripts/ci/install-*.sh; do echo "== $$script"; bash "$$script"; done

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The whole suite: static checks, then unit, integration, e2e and deployment tests; then the e2e
# tests again on a real kube-apiserver where ../shared/k8s is there (skipped, saying so, if not).
test: test-deps lint typecheck contracts
	$(BIN)/pytest -q -p no:cacheprovider --durations=15
	bash scripts/ci/e2e-real-apiserver.sh

e2e-real-apiserver: $(STAMP)
	bash scripts/ci/e2e-real-apiserver.sh

# After editing crds/: copy it to the kustomize base, the Helm chart and the package (tests fail
# while any copy differs).
crd:
	bash deploy/sync-crds.sh

# After changing a setting in operator/warehouse_operator/settings.py: its tables in README.md
# and docs/INSTALL.md (tests fail while they differ).
docs: $(STAMP)
	$(BIN)/python scripts/docs/settings-tables.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
