# The two commands: `make run` boots the default scenarios and reports;
# `make test` runs the host unit tests and the whole boot suite.
CARGO  ?= cargo
RUNNER := $(CARGO) run --quiet --release -p runner --
# e.g. make run SCENARIOS='boot.*' ARGS='--smp 4 --verbose'
SCENARIOS ?=
ARGS ?=

.PHONY: all deps build run test bench lint clean

all: run

deps:
	@scripts/deps.sh

build: deps
	$(RUNNER) build

run: deps
	$(RUNNER) run $(ARGS) $(SCENARIOS)

test: deps
	$(CARGO) test --release
	$(RUNNER) test $(ARGS)

bench: deps
	$(RUNNER) bench $(ARGS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p guest -p loader --release --target x86_64-unknown-none -- -D warnings

clean:
	$(CARGO) clean
