# spt: make demo | make test | make bench | make fuzz
#
# Every target sets up what it needs: host packages (scripts/install-deps,
# as root), the venv in .venv (with .venv/bin/solo5-spt and .venv/bin/spt),
# the trampoline (native/) and the guest kit (guests/).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: all setup deps native guests demo test test-fast bench fuzz clean

all: setup

setup: deps $(VENV)/.installed native guests

deps:
	@echo "-- setup: host packages (scripts/install-deps)"
	@./scripts/install-deps

$(VENV)/.installed: pyproject.toml
	@echo "-- setup: venv $(VENV) (pip install -e .[test,bench], launchers)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# compat mode puts the source tree on sys.path with a plain .pth: no import
	@# hook to load at every interpreter start (it cost each launch ~9 ms).
	@$(PY) -m pip install -q -e '.[test,bench]' --config-settings editable_mode=compat 2>/dev/null \
		|| $(PY) -m pip install -q -e '.[test,bench]'
	@./scripts/write-launcher $(VENV)
	@touch $@

native:
	@echo "-- setup: trampoline (native/)"
	@$(MAKE) -s -C native
	@# Byte-compile the launcher now: with PYTHONDONTWRITEBYTECODE set (some
	@# shells and CI images set it) every launch would recompile spt/ instead.
	@$(PY) -m compileall -q spt

guests: $(VENV)/.installed
	@echo "-- setup: test guests (guests/out)"
	@$(MAKE) -s --no-print-directory -C guests PYTHON=../$(PY)

demo: setup
	$(VENV)/bin/solo5-spt --mem=32 guests/out/hello.spt "Hello from make demo"

# Progress by file (pytest's default style); a closing summary says what ran
# where (tests/conftest.py) before pytest's own "N passed in ..." line.
test: setup
	@echo "-- tests: pytest (the whole suite)"
	$(PY) -m pytest

test-fast: setup
	@echo "-- tests: pytest -m 'not slow'"
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) -m bench

fuzz: setup
	$(PY) -m pytest tests/fuzz --fuzz-cases=$${FUZZ_CASES:-10000} --fuzz-seed=$${FUZZ_SEED:-random}

clean:
	$(MAKE) -s -C native clean
	$(MAKE) -s -C guests clean
	rm -rf $(VENV) *.egg-info
