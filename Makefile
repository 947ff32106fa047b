# The two commands users run: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vla_ros_setup

.PHONY: setup test demo lint clean

setup: $(STAMP)

# Re-runs only when the pins, the messages or the packaging change.
$(STAMP): requirements.txt setup.py CMakeLists.txt package.xml scripts/build_msgs.sh $(wildcard msg/*.msg)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing pinned packages into $(VENV) (first time: about 3 minutes)"
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c "import torch, rclpy, timm" || { echo "[setup] pip install failed"; exit 1; }
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e . 2>&1 | grep -v '^WARNING: Location' || true
	@echo "[setup] building msg/ into $(VENV)"
	@bash scripts/build_msgs.sh $(VENV)
	@touch $(STAMP)

test: setup
	@bash scripts/run_tests.sh

demo: setup
	@$(VENV)/bin/vla-ros demo

lint: setup
	@$(VENV)/bin/ruff check .

clean:
	rm -rf build $(VENV)
