# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
RUN ?= runs/demo
PY := $(VENV)/bin/python
TFCV := $(VENV)/bin/tfcv

.PHONY: venv demo test clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Build-time requirements first: setup.py compiles tfcv_ops against
	# the TensorFlow in this environment (see BUILD.md).
	$(PY) -m pip install -q "tensorflow==2.21.*" "setuptools>=61,<81" wheel
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) benchmarks/demo.py --run_dir=$(RUN) --tfcv=$(TFCV)

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs build *.egg-info tfcv_ops/_tfcv_ops.so
