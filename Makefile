# cedana-rs: checkpoint/restore for processes and containers.
# `make demo` and `make test` work on a fresh Debian 12 machine as root.

CARGO ?= cargo
PREFIX ?= /usr/local
PROFILE ?= debug
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
BIN_DIR := target/$(PROFILE)
BINARIES := cedana cedana-runc cedana-criu-relay containerd-shim-cedana-v2

.PHONY: all deps build install test lint demo bench clean

all: build

## deps: install every system dependency (CRIU 4.1.1 from source, runc, containerd 1.7, ...)
deps:
	bash scripts/install-deps.sh

## build: build every binary of the workspace
build:
	$(CARGO) build --workspace --bins --locked $(CARGO_PROFILE_FLAG)

## install: install the binaries into $(PREFIX)/bin
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	for b in $(BINARIES); do install -m 0755 $(BIN_DIR)/$$b $(DESTDIR)$(PREFIX)/bin/; done

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## test: deps, lint, then every test (unit tests, then end-to-end against real CRIU)
test: deps build lint
	# Tests that run CRIU restore processes with their original PIDs: one at a time.
	$(CARGO) test --workspace --locked -- --test-threads=1

## demo: install, build, and watch a counter get checkpointed and restored
demo: deps build
	bash scripts/demo.sh

## bench: release build, then every benchmark under bench/ (results in bench/results/):
##   checkpoint/restore vs the stock tools (processes and runc containers), cedana-runc
##   pass-through overhead vs runc
bench: deps
	$(CARGO) build --workspace --bins --locked --release
	for s in bench/*.sh; do BIN=target/release bash "$$s" || exit 1; done

clean:
	$(CARGO) clean
