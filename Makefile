# Every target creates or reuses .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench hil hil-vm fuzz fuzz-wire soak clean deps sysdeps

# programs the tests, benches and `make run` call, and the Debian packages that have them:
# installed as root with apt-get when missing (scripts/sysdeps), else the tests skip with a
# reason; gcc compiles the hot modules (ira/native.py); QEMU, busybox, kmod and cpio build and
# boot the guest whose kernel has dummy_hcd, where the USB tests run (ira/tools/usbvm.py), and
# the virtual board (ira/tools/vboard.py), whose flash mkfs.ext4 (e2fsprogs) fills; vde2 is
# bench/venet.py's baseline.
# What scripts/sysdeps runs for a missing program is apt-get install of its package:
# apt-get install iputils-ping (ping) iproute2 (ip) gcc udev (udevadm) ser2net ...
SYSDEPS := ping:iputils-ping ip:iproute2 gcc:gcc udevadm:udev ser2net:ser2net \
           qemu-system-x86_64:qemu-system-x86 busybox:busybox-static modprobe:kmod depmod:kmod \
           cpio:cpio mkfs.ext4:e2fsprogs vde_switch:vde2

# the hot modules that the install compiles with mypyc (ira/native.py lists them)
NATIVE     := $(VENV)/.native
# their tests, run again on the Python sources (IRA_NATIVE=0) by make test
PURE_TESTS := tests/link tests/busmodel tests/runtime
NATIVE_SRC := $(shell sed -n 's/^    "ira\.\([a-z_.]*\)",$$/ira.\1/p' ira/native.py | tr . / | sed 's/$$/.py/')

$(STAMP): pyproject.toml setup.py
	@scripts/sysdeps $(SYSDEPS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	IRA_NATIVE=0 $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# a compiled module whose source changed since the build is not used (ira/native.py): rebuild
$(NATIVE): $(STAMP) ira/native.py setup.py $(NATIVE_SRC)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/ira --version
	touch $(NATIVE)

# the HIL suite through labgrid's pytest plugin runs in a venv of its own: labgrid replaces
# pyserial with its fork (pyserial-labgrid), and ira must work with either
LG_VENV  := .venv-labgrid
LG_STAMP := $(LG_VENV)/.installed

$(LG_STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(LG_VENV)
	$(LG_VENV)/bin/pip install --quiet --upgrade pip
	IRA_NATIVE=0 $(LG_VENV)/bin/pip install --quiet -e '.[labgrid,test]'
	touch $(LG_STAMP)

deps: $(NATIVE)

sysdeps:
	@scripts/sysdeps $(SYSDEPS)

## run: the whole stack on one machine over a virtual null-modem
run: sysdeps $(NATIVE)
	$(BIN)/ira loopback

## test: lint, type check and the full test suite (what CI runs)
## (the sans-I/O cores' tests run twice: compiled, and as the Python they are written in)
test: sysdeps lint typecheck $(NATIVE) $(LG_STAMP)
	$(BIN)/pytest -q
	IRA_NATIVE=0 $(BIN)/pytest -q $(PURE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check ira tests hil_tests bench
	$(BIN)/ruff format --check ira tests hil_tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: benchmarks (ratios measured in one run); see docs/PERFORMANCE.md
bench: $(NATIVE)
	$(BIN)/python bench/link.py
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/virtio.py
	$(BIN)/python bench/venet.py
	$(BIN)/python bench/psk.py
	$(BIN)/python bench/flash.py

## hil: the hardware-in-the-loop suite: a virtual null-modem per test, or the rig named by
## IRA_LINK_A / IRA_LINK_B (see docs/HIL.md); HIL_ARGS are passed to pytest
hil: $(NATIVE)
	$(BIN)/pytest -q hil_tests $(HIL_ARGS)

## hil-vm: two virtual boards (boards/qemu-x86_64, QEMU TCG), data UARTs joined by a null-modem
## at 115200 baud, both flashed with `ira flash` (one the board side, one the host side), then
## discovery, DEVCALLs, a board rebooted and the cable unplugged; and the virtual board's own
## flash tests (docs/HIL.md). The default suite runs the short part (IRA_HIL_VM unset)
hil-vm: sysdeps $(NATIVE)
	IRA_HIL_VM=1 $(BIN)/pytest -q hil_tests/test_vm_boards.py tests/vboard $(HIL_ARGS)

## fuzz: every fuzz test (marker fuzz: the decoders, framing, virtqueues, venet frames, the link
## and the bus state machines) at FUZZ_EXAMPLES examples each (a floor: no test runs fewer than
## in make test). Pure Python on two cores: 2,000 took 170 s, 5,000 took 15 min with the
## machine loaded 6x; `make fuzz FUZZ_EXAMPLES=200000` runs for hours
FUZZ_EXAMPLES ?= 3000
fuzz: $(NATIVE)
	IRA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -m fuzz tests

## fuzz-wire: a hostile peer against running `ira board serve` and `ira host serve`
## processes, FUZZ_WIRE_S seconds a side (see docs/FUZZING.md)
FUZZ_WIRE_S ?= 600
fuzz-wire: $(NATIVE)
	rc=0; \
	$(BIN)/python -m ira.tools.fuzzwire board --duration $(FUZZ_WIRE_S) || rc=1; \
	$(BIN)/python -m ira.tools.fuzzwire host --duration $(FUZZ_WIRE_S) || rc=1; \
	exit $$rc

## soak: long fault matrices on the virtual null-modem, and an hour of fuzz-wire a side
soak: $(NATIVE)
	IRA_SOAK=1 $(BIN)/pytest -q -m slow tests hil_tests
	$(MAKE) fuzz-wire FUZZ_WIRE_S=3600

clean:
	rm -rf $(VENV) $(LG_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	rm -f ira_native__mypyc.*.so ira/*/*.so ira/_native_build.json
