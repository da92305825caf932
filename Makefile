# The two commands: `make run` boots the default scenarios and reports;
# `make test` runs the host unit tests and the whole boot suite. `make
# mutants` is the mutation suite: every deliberate guest defect must be caught.
CARGO  ?= cargo
RUNNER := $(CARGO) run --quiet --release -p runner --
# e.g. make run SCENARIOS='boot.*' ARGS='--smp 4 --verbose'
SCENARIOS ?=
ARGS ?=
# e.g. make mutants DEFECTS='gp-early sync-no-wait' ARGS='--json mutants.json'
DEFECTS ?=

# Real Limine (the limine-bios/limine-uefi boot paths): the pinned binary
# release, fetched the way Limine's README says. The runner finds it here, or
# wherever LIMINE_DIR points. runner/src/boot/limine.rs pins the same tag.
LIMINE_TAG   := v8.2.0-binary
LIMINE_CACHE := .cache/limine/$(LIMINE_TAG)

.PHONY: all deps build run test soak mutants bench lint clean limine demo gdb

all: run

deps:
	@scripts/deps.sh

limine: $(LIMINE_CACHE)/limine-bios.sys

$(LIMINE_CACHE)/limine-bios.sys:
	rm -rf $(LIMINE_CACHE)
	git clone https://github.com/limine-bootloader/limine.git --branch=$(LIMINE_TAG) --depth=1 $(LIMINE_CACHE)

build: deps
	$(RUNNER) build

run: deps
	$(RUNNER) run $(ARGS) $(SCENARIOS)

test: deps
	$(CARGO) test --release
	# Again in the debug profile, with overflow checks on: what a plain
	# `cargo test` runs, and what catches arithmetic the release build wraps.
	$(CARGO) test
	$(RUNNER) test $(ARGS)

# The suite with the soak loops at full size: core.leak's 100 000 spawn/exit
# cycles, life.stress's 10 000 tasks (make test runs a tenth, same checks).
soak: deps
	$(RUNNER) test --soak $(ARGS)

# Build each deliberate guest defect (runner/src/defects.rs; cargo keeps one
# build per defect), boot the scenarios that must catch it beside the normal
# guest, and fail unless every one is caught by what must catch it.
mutants: deps
	$(RUNNER) mutants $(ARGS) $(DEFECTS)

# Boot a few stack scenarios and show each diagnostic for a person: the oops,
# the trace with file:line, a map of the stack area. e.g. make demo SCENARIOS='stack.*'
demo: deps
	$(RUNNER) demo $(ARGS) $(SCENARIOS)

# Stop one scenario at its fault in GDB: QEMU waits before the first
# instruction and the runner prints the gdb command to paste into another
# terminal. e.g. make gdb SCENARIO=stack.exception
SCENARIO ?= stack.recursion
gdb: deps
	$(RUNNER) run --gdb $(ARGS) $(SCENARIO)

bench: deps
	$(RUNNER) bench $(ARGS)

lint:
	$(CARGO) fmt --all --check
	# The guest's layers (tests/layers.rs): no import goes up a layer, and
	# nothing above arch and mm may use unsafe.
	$(CARGO) test --quiet -p runner --test layers
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p guest -p loader --release --target x86_64-unknown-none -- -D warnings

clean:
	$(CARGO) clean
