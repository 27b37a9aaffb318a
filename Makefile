# spt: make demo | make test | make bench | make fuzz
#
# Every target sets up what it needs: host packages (scripts/install-deps,
# as root), the venv in .venv (with .venv/bin/solo5-spt, .venv/bin/spt and
# .venv/bin/spt-oci),
# the trampoline (native/) and the guest kit (guests/).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: all setup deps native guests demo test test-fast test-arm64 bench fuzz clean install uninstall wheel

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

# The aarch64 build, tested in an arm64 Linux under qemu (tests/arm64/vm.py):
# cross-built trampoline and guest kit in build/aarch64/, the VM's tree cached
# in build/arm64-vm/.
AARCH64_CC ?= aarch64-linux-gnu-gcc
test-arm64: setup
	@echo "-- arm64: host packages (qemu, cross compiler, mmdebstrap)"
	@./scripts/install-deps --arm64
	@echo "-- arm64: cross-building the trampoline and the guest kit into build/aarch64/"
	$(MAKE) -s -C native ARCH=aarch64 CC=$(AARCH64_CC) OUT=$(CURDIR)/build/aarch64/spt-trampoline
	$(MAKE) -s -C guests ARCH=aarch64 CC=$(AARCH64_CC) OUT=$(CURDIR)/build/aarch64/guests PYTHON=../$(PY)
	$(PY) tests/arm64/vm.py

# make wheel [WHEEL_ARCH=aarch64]: a platform wheel in dist/, for this
# machine or cross-built (the trampoline is the only compiled part).
WHEEL_ARCH ?= $(shell uname -m)
wheel: $(VENV)/.installed
	@echo "spt: building a wheel for $(WHEEL_ARCH) into dist/"
	SPT_ARCH=$(WHEEL_ARCH) $(if $(filter-out $(shell uname -m),$(WHEEL_ARCH)),CC=$(AARCH64_CC)) \
		$(PY) -m build --wheel --outdir dist .

bench: setup
	$(PY) -m bench

fuzz: setup
	$(PY) -m pytest tests/fuzz --fuzz-cases=$${FUZZ_CASES:-10000} --fuzz-seed=$${FUZZ_SEED:-random}

# make install [PREFIX=/usr/local] [DESTDIR=]: $(PREFIX)/bin/solo5-spt and
# $(PREFIX)/bin/spt, where a Solo5 user looks for solo5-spt. They run a venv
# of their own in $(PREFIX)/lib/spt (spt and the libraries it is tested
# with, from a wheel built here), made under $(DESTDIR) and run from PREFIX:
# scripts/write-launcher writes both entry scripts for the final paths.
PREFIX ?= /usr/local
SPT_HOME = $(PREFIX)/lib/spt

install: $(VENV)/.installed
	rm -rf '$(DESTDIR)$(SPT_HOME)'
	$(PYTHON) -m venv --without-pip '$(DESTDIR)$(SPT_HOME)'
	$(PY) -m pip --python '$(DESTDIR)$(SPT_HOME)/bin/python' install -q \
		--no-warn-script-location --no-compile .
	@# byte-compiled for where it runs: no DESTDIR path in the .pyc files
	'$(DESTDIR)$(SPT_HOME)/bin/python' -m compileall -q -s '$(DESTDIR)' -p / \
		'$(DESTDIR)$(SPT_HOME)/lib'
	./scripts/write-launcher '$(DESTDIR)$(SPT_HOME)' '$(SPT_HOME)'
	@# what else pip wrote into bin/ (the libraries' scripts, activate) names
	@# the DESTDIR path: the installation is run through its two entry
	@# scripts only, never activated
	find '$(DESTDIR)$(SPT_HOME)/bin' -mindepth 1 -maxdepth 1 ! -name 'python*' \
		! -name solo5-spt ! -name spt ! -name spt-oci -exec rm -rf {} +
	sed -i '/^command = /d' '$(DESTDIR)$(SPT_HOME)/pyvenv.cfg'
	mkdir -p '$(DESTDIR)$(PREFIX)/bin'
	ln -sfn ../lib/spt/bin/solo5-spt '$(DESTDIR)$(PREFIX)/bin/solo5-spt'
	ln -sfn ../lib/spt/bin/spt '$(DESTDIR)$(PREFIX)/bin/spt'
	ln -sfn ../lib/spt/bin/spt-oci '$(DESTDIR)$(PREFIX)/bin/spt-oci'
	@echo 'installed $(PREFIX)/bin/solo5-spt, spt and spt-oci (in $(DESTDIR)$(PREFIX))'

uninstall:
	rm -f '$(DESTDIR)$(PREFIX)/bin/solo5-spt' '$(DESTDIR)$(PREFIX)/bin/spt' \
		'$(DESTDIR)$(PREFIX)/bin/spt-oci'
	rm -rf '$(DESTDIR)$(SPT_HOME)'

clean:
	$(MAKE) -s -C native clean
	$(MAKE) -s -C guests clean
	rm -rf $(VENV) *.egg-info
