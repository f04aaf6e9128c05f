# Trainwright: the commands a user and CI run. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Built control-plane binaries live outside the clone so CI and later clones reuse them.
export TRAINWRIGHT_CACHE ?= $(HOME)/.cache/trainwright
PYTEST_ARGS ?=

.PHONY: help install system-deps k8s-bin images tools lint typecheck importlint test test-fast bench \
        accuracy-doc crds demo cluster-up cluster-down run clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with the project, the trainer and the dev tools

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "install: the project with PyTorch, DeepSpeed and the dev tools into $(VENV): about 7 GB;"
	@echo "install: 5-10 min on a fresh machine (each package is named below as pip gets to it)"
	$(PY) -m pip install --progress-bar off -e '.[trainer,dev]' \
		| grep --line-buffered -E '^(Collecting|Downloading|Building|Installing|Successfully)' || test $${PIPESTATUS[0]} -eq 0
	touch $@

system-deps: ## install Debian packages: prometheus, containerd, runc, CNI plugins, iptables, debootstrap
	@bash hack/system-deps.sh

k8s-bin: ## build (or reuse) the control plane, kwok, Kueue, and the real node's kubelet, kube-proxy, CoreDNS
	@bash hack/k8s/build.sh

images: install system-deps k8s-bin ## build (or reuse) the pause, operator and trainer images without Docker
	@bash hack/images/build.sh

tools: ## build (or reuse) helm, helm-unittest and kubeconform for the chart's tests
	@bash hack/tools/build.sh

lint: install ## ruff
	$(VENV)/bin/ruff check operator trainer-image tests benchmarks
	$(VENV)/bin/ruff format --check operator trainer-image tests benchmarks

typecheck: install ## mypy --strict on the trainwright package
	$(VENV)/bin/mypy

importlint: install ## architecture contracts (.importlinter)
	$(VENV)/bin/lint-imports

test: install system-deps k8s-bin images tools lint typecheck importlint ## the whole suite, as CI runs it
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: install ## unit tests only (no cluster, no torchrun, no Prometheus)
	$(VENV)/bin/pytest -m "not e2e and not distributed and not prometheus" $(PYTEST_ARGS)

bench: install ## benchmarks, printing their figures
	$(PY) benchmarks/run_all.py

accuracy-doc: install ## regenerate docs/planner-accuracy.md from ../shared/reference/measured-public.csv
	$(PY) -m trainwright.cli.accuracy --write docs/planner-accuracy.md

crds: install ## regenerate crds/ and the Helm chart's CRD templates from the pydantic API models
	$(PY) -m trainwright.api.crdgen crds --chart-templates helm/trainwright/templates/crds

cluster-up: system-deps k8s-bin images ## start the local control plane and the real node; writes .cluster/kubeconfig
	@bash hack/k8s/cluster.sh up

cluster-down: ## stop the local control plane
	@bash hack/k8s/cluster.sh down

run: install ## run the operator against the current KUBECONFIG
	$(VENV)/bin/trainwright operator

demo: install system-deps k8s-bin images tools ## the whole story on the local control plane
	@bash hack/demo.sh

clean: cluster-down ## remove build outputs (keeps the binary cache)
	rm -rf $(VENV) .cluster .pytest_cache .mypy_cache .ruff_cache

.PHONY: argocd-cm
argocd-cm: install ## regenerate helm/argocd/argocd-cm.yaml from the Argo CD health scripts
	$(PY) hack/argocd_cm.py

.PHONY: dashboards dashboards-png
dashboards: install ## regenerate helm/trainwright/dashboards/*.json from hack/dashboards/dashboards.py
	$(PY) hack/dashboards/generate.py

dashboards-png: install system-deps ## redraw docs/dashboards/*.png from the dashboards' queries (starts a Prometheus)
	$(PY) hack/dashboards/render_png.py
