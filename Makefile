# ferry.docker developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
# The repository root is the collection root; Ansible finds it as ansible_collections/ferry/docker here.
COLLECTIONS := $(CURDIR)/.cache/collections
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)

.PHONY: help venv collection engine lab-images lab-up lab-down lab-status demo test lint sanity unit integration molecule build bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv: $(VENV)/.stamp ## create .venv from requirements-dev.txt
$(VENV)/.stamp: requirements-dev.txt
	bash tests/bootstrap-venv.sh "$(PYTHON)" "$(VENV)"
	touch $@

collection: ## link the repository as ansible_collections/ferry/docker
	@mkdir -p $(COLLECTIONS)/ansible_collections/ferry
	@ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/ferry/docker

engine: ## make sure a Docker engine answers (installs docker.io as root on Debian)
	bash lab/ensure-docker.sh

lab-images: venv engine ## build the lab images (cached by recipe)
	$(BIN)/python lab/lab.py images

lab-up: venv engine collection ## start the lab hosts (default 2; LAB_HOSTS=N for more, LAB_SUBNET=cidr to choose the subnet, LAB_SUITES="bookworm bookworm trixie" for each host's Debian release)
	$(BIN)/python lab/lab.py up $(if $(LAB_HOSTS),--hosts $(LAB_HOSTS)) $(if $(LAB_SUBNET),--subnet $(LAB_SUBNET)) $(if $(LAB_SUITES),--suites "$(LAB_SUITES)")

lab-down: ## remove the lab hosts, their volumes and their network
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) lab/lab.py down

lab-status: ## show the lab hosts and whether dockerd and sshd answer
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) lab/lab.py status

demo: lab-up ## migrate the sample service from lab host1 to host2, print the report
	bash lab/demo.sh

test: ## run every gate and every test (installs what it needs)
	bash tests/run-all.sh

lint: venv collection ## ruff and ansible-lint only
	bash tests/run-all.sh ruff ansible-lint

sanity: venv ## ansible-test sanity only
	bash tests/run-all.sh sanity

unit: venv collection ## unit tests only
	bash tests/run-all.sh unit

integration: venv collection engine ## integration tests only
	bash tests/run-all.sh integration

molecule: venv collection engine ## molecule scenarios only
	bash tests/run-all.sh molecule

build: venv ## build the collection tarball into build/
	$(BIN)/ansible-galaxy collection build --force --output-path build .

bench: venv collection engine ## run the benchmark suite (BENCH_SCALE=tiny|256M|1G|2G)
	$(BIN)/python -m benchmarks $(if $(BENCH_SCALE),--scale $(BENCH_SCALE)) $(if $(filter 0,$(BENCH_MEMORY)),,--memory)
