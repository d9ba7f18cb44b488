# imagefs — see README.md.
#
#   make build      bin/imagefs
#   make test       install what the tests need, then go vet + every test
#   make demo       build a demo store of locally made images, mount it at ./demo/mnt
#   make demo-stop  unmount the demo
#   make lint       go vet + staticcheck
#   make bench      the benchmark harness (test/bench)
#   make install    install bin/imagefs to $(PREFIX)/bin
#   make clean      remove build output

SHELL := /bin/bash

# Go 1.26 lives in /usr/local/go on the machines we build on.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go

# btrfs and gpgme C headers are not installed: build containers/storage
# without the btrfs driver and containers/image with the pure-Go openpgp.
BUILDTAGS := exclude_graphdriver_btrfs,containers_image_openpgp
export GOFLAGS := -buildvcs=false -tags=$(BUILDTAGS)

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

PREFIX ?= /usr/local
DESTDIR ?=
BIN := bin/imagefs
LOCALBIN := $(CURDIR)/.bin

# The whole suite must stay well under 15 minutes (CI budget).
TEST_TIMEOUT ?= 12m
TEST_FLAGS ?=

# Packages the tests and the demo need; apt names, and a command that
# tells whether each is there.
APT_PACKAGES := podman buildah skopeo fuse3 fuse-overlayfs jq attr python3
NEEDED_COMMANDS := podman buildah skopeo fusermount3 fuse-overlayfs jq getfattr python3

.PHONY: all build test deps lint bench demo demo-stop demo-clean install clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/imagefs

# deps installs the system packages the tests use (once: apt-get update
# only when something is missing) and downloads the Go modules.
deps:
	@missing=""; for c in $(NEEDED_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "missing:$$missing; installing $(APT_PACKAGES)"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root (or install$$missing yourself)"; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && \
		apt-get install -y -q $(APT_PACKAGES) </dev/null || exit 1; \
	fi
	$(GO) mod download

# IMAGEFS_BIN makes the end-to-end tests use the binary just built.
test: deps build
	$(GO) vet ./...
	IMAGEFS_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

$(LOCALBIN)/staticcheck:
	GOBIN=$(LOCALBIN) GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@latest

lint: $(LOCALBIN)/staticcheck
	$(GO) vet ./...
	$(LOCALBIN)/staticcheck -tags $(BUILDTAGS) ./...

# The benchmark harness (issue 5) lives in test/bench; BENCH_FLAGS go to it.
# It builds its Debian image with mmdebstrap.
BENCH_FLAGS ?=
bench: deps build
	@command -v mmdebstrap >/dev/null 2>&1 || { \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q mmdebstrap </dev/null; }
	@if [ -d test/bench ]; then \
		IMAGEFS_BIN=$(CURDIR)/$(BIN) $(GO) run ./test/bench $(BENCH_FLAGS); \
	else \
		echo "test/bench does not exist yet"; exit 1; \
	fi

demo: deps build
	./scripts/demo.sh start

demo-stop:
	./scripts/demo.sh stop

# demo-clean also deletes the demo store (it is rebuilt by the next make demo).
demo-clean:
	./scripts/demo.sh clean

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/imagefs

clean:
	rm -rf bin $(LOCALBIN)
