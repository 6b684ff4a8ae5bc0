# cedana-rs: checkpoint/restore for processes and containers.
# `make demo` and `make test` work on a fresh Debian 12 machine as root.

CARGO ?= cargo
PREFIX ?= /usr/local
# `make build`/`make test` use the debug profile (fast to compile); `make install` always
# installs release binaries (the debug `cedana` is ~150 MB and much slower).
PROFILE ?= debug
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
CARGO_TARGET_DIR ?= target
RELEASE_DIR := $(CARGO_TARGET_DIR)/release
BINARIES := cedana cedana-runc cedana-criu-relay containerd-shim-cedana-v2 cedana-guest-agent cedana-gpu-helper
# systemd unit dir: $(PREFIX)/lib/systemd/system (the admin's /etc/systemd/system wins).
SYSTEMD_DIR ?= $(PREFIX)/lib/systemd/system

.PHONY: all deps build build-release install test lint demo bench clean guest-image gpu-bundle

all: build

## deps: install every system dependency (CRIU 4.1.1 from source, runc, containerd 1.7, ...)
deps:
	bash scripts/install-deps.sh

## build: build every binary of the workspace
build:
	$(CARGO) build --workspace --bins --locked $(CARGO_PROFILE_FLAG)

## build-release: build every binary of the workspace, optimized
build-release:
	$(CARGO) build --workspace --bins --locked --release

## install: release binaries into $(PREFIX)/bin, the systemd unit into $(SYSTEMD_DIR)
##   (not enabled or started: `systemctl daemon-reload && systemctl enable --now cedana`)
install: build-release
	install -d $(DESTDIR)$(PREFIX)/bin
	for b in $(BINARIES); do install -m 0755 $(RELEASE_DIR)/$$b $(DESTDIR)$(PREFIX)/bin/; done
	install -d $(DESTDIR)$(SYSTEMD_DIR)
	sed 's|@BINDIR@|$(PREFIX)/bin|g' deploy/systemd/cedana.service > $(DESTDIR)$(SYSTEMD_DIR)/cedana.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/cedana.service

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

## gpu-bundle: release binaries, CRIU and its libraries, and scripts/gpu-check.sh in
##   dist/gpu-bundle (under 64 MiB), for a GPU machine without CRIU: there, run
##   `bash gpu-check.sh` from that directory
gpu-bundle: build-release
	bash scripts/gpu-bundle.sh $(RELEASE_DIR) dist/gpu-bundle

## bench: release build, then every benchmark under bench/ (results in bench/results/):
##   checkpoint/restore vs the stock tools (processes and runc containers), cedana-runc
##   pass-through overhead vs runc, lazy vs full restore (time to the first answer),
##   kata: a guest workload through the agent vs CRIU by hand in the guest + tar over
##   vsock (BENCH_SKIP_KATA=1 skips it)
bench: deps build-release
	for s in bench/*.sh; do BIN=$(RELEASE_DIR) bash "$$s" || exit 1; done

## guest-image: a kata-style guest initramfs with cedana-guest-agent and CRIU, in
##   $(CARGO_TARGET_DIR)/guest-image (boot it with QEMU: see README, "kata")
guest-image: build-release
	bash scripts/guest-image.sh $(CARGO_TARGET_DIR)/guest-image $(RELEASE_DIR)/cedana-guest-agent

clean:
	$(CARGO) clean
