# Every target works on a fresh machine: it creates and uses .venv in the repository root.
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch goes in first, so no CUDA wheels are pulled by the dependencies.
TORCH ?= torch==2.13.0

.PHONY: install test bench demo lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	touch $@

lint: install
	$(VENV)/bin/ruff check mdgru_bids tests benchmarks
	$(VENV)/bin/ruff format --check mdgru_bids tests benchmarks

test: lint
	$(VENV)/bin/pytest -q

bench: install
	$(PY) benchmarks/bench_mdgru.py

demo: install
	$(PY) benchmarks/bench_mdgru.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
