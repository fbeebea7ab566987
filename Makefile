# Steward: the two commands a newcomer needs.
#
#   make demo   set everything up and serve the dashboard at http://127.0.0.1:8000
#   make test   set everything up and run the whole test suite
#   make clean  remove local state (var/) and the virtualenv (.venv)
#
# Both need only Python 3.12 (the version in .python-version) and make; the first run creates
# .venv and installs the dependencies (the only network access), later runs reuse it.

# The Python version this project pins (.python-version, honoured by pyenv shims).
PYTHON_VERSION := $(strip $(shell cat .python-version 2>/dev/null))
ifeq ($(PYTHON_VERSION),)
PYTHON_VERSION := 3.12
endif

VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Exit status 0 when the Python running it is $(PYTHON_VERSION).
IS_RIGHT_PYTHON := -c 'import sys; sys.exit("%d.%d" % sys.version_info[:2] != "$(PYTHON_VERSION)")'

# A fixed, test-only key; the settings refuse to start without one when DEBUG is off.
TEST_SECRET_KEY := steward-test-only-secret-key-not-for-production

# Extra arguments, e.g. make test PYTEST_ARGS="-x -k approvals"  or  make demo DEMO_ARGS="--port 8001"
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: venv demo test clean

venv: $(VENV)/.installed

# Re-installs when pyproject.toml changes; recreates .venv when it is missing or the wrong Python.
$(VENV)/.installed: pyproject.toml
	@set -e; \
	if [ -x $(VENV_PYTHON) ] && $(VENV_PYTHON) $(IS_RIGHT_PYTHON) 2>/dev/null; then \
		echo "Using the existing $(VENV) (Python $(PYTHON_VERSION))"; \
	else \
		if python3 $(IS_RIGHT_PYTHON) 2>/dev/null; then \
			PYTHON=python3; \
		elif python$(PYTHON_VERSION) $(IS_RIGHT_PYTHON) 2>/dev/null; then \
			PYTHON=python$(PYTHON_VERSION); \
		else \
			echo "error: Steward needs Python $(PYTHON_VERSION), but neither 'python3' nor" >&2; \
			echo "       'python$(PYTHON_VERSION)' on PATH is Python $(PYTHON_VERSION)." >&2; \
			echo "       Install Python $(PYTHON_VERSION) (e.g. 'pyenv install $(PYTHON_VERSION)') and retry." >&2; \
			exit 1; \
		fi; \
		echo "Creating $(VENV) with $$PYTHON ($$(command -v $$PYTHON))"; \
		rm -rf $(VENV); \
		$$PYTHON -m venv $(VENV); \
	fi
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV_PYTHON) -m pip install --disable-pip-version-check -e '.[test]'
	@touch $@

demo: venv
	DEBUG=1 $(VENV_PYTHON) manage.py demo $(DEMO_ARGS)

test: venv
	SECRET_KEY="$${SECRET_KEY:-$(TEST_SECRET_KEY)}" $(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf var $(VENV)
