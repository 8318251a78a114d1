# Set-up, tests and the lab. `make test` is the one test command (.ci/run calls it);
# `make demo` shows both outcomes without Kubernetes. `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
STACK ?= noskip
PYTEST_ARGS ?=

# One virtual environment for the Pulumi CLI (Pulumi.yaml), the tests and the lab.
VENV := .venv
VENV_PY := $(VENV)/bin/python
# The stamps are named after a hash of the requirements, so editing them (not just
# touching them) reinstalls, and an unchanged venv costs nothing.
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-16)

# checkov pins an older `packaging` than pulumi accepts: it gets its own venv.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell sha256sum checkov/requirements.txt | cut -c1-16)

# etcd 3.4.23 from Debian's packages, unpacked by scripts/fetch-etcd-3.4.sh.
ETCD34_DIR := .cache/etcd-3.4.23
ETCD34_BIN := $(CURDIR)/$(ETCD34_DIR)/usr/bin/etcd
ETCDCTL34_BIN := $(CURDIR)/$(ETCD34_DIR)/usr/bin/etcdctl

.PHONY: help venv system-deps etcd34 checkov-venv test demo lab bench lint clean

help:
	@echo "make demo          run the lab for stacks skip and noskip (Linux, root)"
	@echo "make test          set everything up and run the whole test suite"
	@echo "make lab STACK=..  run the lab for one stack (default: $(STACK))"
	@echo "make bench         lab overhead against bare etcd, 3/5/7 members"
	@echo "make lint          ruff check, ruff format --check, mypy"
	@echo "make venv          .venv with the pinned requirements (also used by the Pulumi CLI)"
	@echo "make system-deps   iptables, iproute2 and util-linux (installed when root and missing)"
	@echo "make etcd34        Debian's etcd 3.4.23 unpacked into $(ETCD34_DIR)"
	@echo "make checkov-venv  checkov in its own venv ($(CHECKOV_VENV))"
	@echo "make clean         remove lab leftovers, venvs and caches"

# ------------------------------------------------------------------ set-up

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt
	@# A venv without a working pip (e.g. python3-venv was missing) is rebuilt.
	@$(VENV_PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VENV_PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

checkov-venv: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): checkov/requirements.txt
	@$(CHECKOV_VENV)/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf $(CHECKOV_VENV) && $(PYTHON) -m venv $(CHECKOV_VENV); }
	$(CHECKOV_VENV)/bin/python -m pip install -q -r checkov/requirements.txt
	@rm -f $(CHECKOV_VENV)/.installed-* && touch $@

system-deps:
	@scripts/system-deps.sh

etcd34:
	@scripts/fetch-etcd-3.4.sh

# ------------------------------------------------------------------ checks

# pytest exits 5 when it collects nothing: say so instead of a bare "Error 5".
test: venv system-deps etcd34 checkov-venv
	@ETCD34_BIN=$(ETCD34_BIN) ETCDCTL34_BIN=$(ETCDCTL34_BIN) $(VENV_PY) -m pytest $(PYTEST_ARGS) \
		|| { rc=$$?; [ $$rc -ne 5 ] || echo "make test: pytest collected no tests" >&2; exit $$rc; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy components lab __main__.py

# ------------------------------------------------------------------ the lab

# Both stacks run even if the first one surprises us; the exit status is non-zero
# when either verdict differs from its prediction (lab: 0 = as predicted).
demo: venv system-deps
	@status=0; \
	for stack in skip noskip; do \
		echo "=== lab: stack $$stack ==="; \
		rc=0; $(VENV_PY) -m lab run --stack $$stack || rc=$$?; \
		echo "=== stack $$stack: exit $$rc$$( [ $$rc -eq 0 ] && echo ' (as predicted)')"; \
		[ $$rc -le $$status ] || status=$$rc; \
	done; \
	exit $$status

lab: venv system-deps
	$(VENV_PY) -m lab run --stack $(STACK)

bench: venv system-deps
	$(VENV_PY) -m lab.bench

clean:
	@# Lab leftovers first (namespaces, processes, run directories): it needs the venv.
	-[ ! -x $(VENV_PY) ] || $(VENV_PY) -m lab cleanup --kept
	rm -rf $(VENV) $(CHECKOV_VENV) .cache .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
