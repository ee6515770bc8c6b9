# Two entry points for a fresh machine with only Python 3.11:
#   make demo  -- create .venv, install the pinned stack, run the demo on built-in toy data
#   make test  -- create .venv, install the pinned stack, run the test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (found %s)" % sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps -c constraints.txt cityscapesscripts pyquaternion
	@touch $@

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m icnet_tf.demo --out_dir demo_output

clean:
	rm -rf $(VENV) demo_output .pytest_cache
