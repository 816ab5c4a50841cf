# Every target works on a fresh machine: it creates and uses .venv in the repository root.
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch goes in first, so no CUDA wheels are pulled by the dependencies.
TORCH ?= torch==2.13.0

.PHONY: install test bench demo lint clean container-test

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

# The demo: a small phantom study, the participant and group levels, and the report paths.
# Nothing is downloaded: MNI152NLin2009cAsym where TEMPLATEFLOW_HOME has it, else the template
# the app embeds (nilearn's MNI ICBM152 2009a), which the log and the reports then name.
DEMO ?= demo
# Prints the default bundled model, or, where it is not installed, makes and prints a small
# untrained one (its lesions are noise: the demo then shows the pipeline, not its accuracy).
define DEMO_MODEL
import sys
from pathlib import Path
import torch
from mdgru_bids.model.files import DEFAULT_MODEL, bundled_model, make_card, save_model
from mdgru_bids.model.network import NetworkConfig, build_network
path = bundled_model(DEFAULT_MODEL)
if not path.is_file():
    print(f"{path.name} is not installed: using an UNTRAINED model", file=sys.stderr)
    torch.manual_seed(0)
    config = NetworkConfig(in_channels=1, hidden=(4, 4), outputs=(4, 4), kernel_size=(3, 3), stem=4)
    card = make_card(config, ["FLAIR"], patch_size=[32, 32, 32], overlap=[8, 8, 8])
    path = save_model(Path(sys.argv[1]) / "untrained.safetensors", build_network(config), card)
print(path)
endef
export DEMO_MODEL

demo: install
	rm -rf $(DEMO)
	$(VENV)/bin/mdgru-bids-phantom $(DEMO)/bids --participants 2 --sessions 3 --seed 0 --resolution 2
	$(VENV)/bin/mdgru-bids $(DEMO)/bids $(DEMO)/out participant -w $(DEMO)/work \
		--model "$$($(PY) -c "$$DEMO_MODEL" $(DEMO))"
	$(VENV)/bin/mdgru-bids $(DEMO)/bids $(DEMO)/out group -w $(DEMO)/work
	@echo "Reports: $(abspath $(DEMO))/out/sub-01.html and $(abspath $(DEMO))/out/group.html"

# The CPU image built with podman on a debootstrapped Debian and a participant run in it (root,
# podman, runc, debootstrap; 18-20 minutes here on 2 loaded cores, so not part of `make test`
# nor of .ci/run).
container-test: install
	tests/container_test.sh

clean:
	rm -rf $(VENV) build wheelhouse *.egg-info
