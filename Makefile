# napari-medprompt: `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medprompt-installed
SCREENSHOT ?=
PYTEST_ARGS ?=
XVFB := xvfb-run -a -s "-screen 0 1920x1200x24"

.PHONY: demo test venv system-deps bench clean-venv

# The virtual environment, rebuilt when pyproject.toml changes.  torch/torchvision first (pinned to
# the releases the package mirror carries), then sam2 without build isolation so its build sees them.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -q "torch>=2.1,<=2.14.1" "torchvision>=0.16,<=0.29.1"
	$(PY) -m pip install -q --no-build-isolation "sam2>=1.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

# Opens napari with the plugin's widgets and the sample CT.  SCREENSHOT=out.png renders the same
# window off screen (under Xvfb when there is no display), writes the PNG and exits.
demo: $(STAMP)
ifeq ($(SCREENSHOT),)
	$(PY) -m napari_medprompt.demo
else
	@bash scripts/install-system-deps.sh
	$(XVFB) $(PY) -m napari_medprompt.demo --screenshot "$(SCREENSHOT)"
endif

# Installs what the tests need (system packages when run as root), then runs the whole suite under
# a virtual display.  GPU tests are skipped here; run them with `pytest -m gpu` on a CUDA machine.
test: system-deps $(STAMP)
	$(XVFB) $(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks --json benchmarks/results.json

clean-venv:
	rm -rf $(VENV)
