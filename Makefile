# strata: the two Quick start commands are `make demo` and `make test`.
CARGO ?= cargo
OUT ?= out
# System tools the stages and tests use: bubblewrap (sandbox), GNU tar and
# compressors (tar stage), coreutils (copy stage), curl (curl sources),
# mmdebstrap and the archive keyring (bootstrap stage), tmux (the tests that
# drive the live view and --break in a pseudo-terminal), xfsprogs and attr
# (the store's flatten tests on an XFS loop image with reflinks).
DEB_PACKAGES = bubblewrap uidmap passt curl tar gzip xz-utils zstd coreutils ca-certificates time mmdebstrap debian-archive-keyring dpkg-dev tmux xfsprogs attr

.PHONY: deps build demo test bench lint

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

build:
	$(CARGO) build --workspace --release

# Builds the example manifest and exports its tarball.
demo: deps build
	rm -rf $(OUT)/demo
	./target/release/strata build manifests/hello.json --store $(OUT)/store \
	  --checkpoint '*' --export tarball --output-directory $(OUT)/demo
	@echo "exported: $$(realpath $(OUT)/demo/tarball/hello.tar.gz)"

# Every test: unit tests of each crate and the integration tests in tests/it,
# which run the built binaries (so build them first).
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# The engine (hello.json cold/warm), two pipelines in parallel against one
# after the other, the Debian bootstrap against bare mmdebstrap, package
# builds, the store (layers, branching, flatten) and execution environments
# (unshare, incus-lxc).
bench: deps build
	$(CARGO) bench -p strata-tests --bench build
	$(CARGO) bench -p strata-tests --bench parallel
	$(CARGO) bench -p strata-tests --bench debian
	$(CARGO) bench -p strata-tests --bench package
	$(CARGO) bench -p strata-tests --bench store
	$(CARGO) bench -p strata-tests --bench backend

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
