# strata: the two Quick start commands are `make demo` and `make test`.
CARGO ?= cargo
OUT ?= out
# `make install` and `make deb` build with this cargo profile (dev is
# quicker to build; the tests package that).
PROFILE ?= release
BIN = target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
PREFIX ?= /usr/local
DESTDIR ?=
# Where zsh looks: packages (PREFIX=/usr) use vendor-completions, local
# installs site-functions.
ZSH_COMPLETIONS ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)
VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB = $(OUT)/strata_$(VERSION)_$(DEB_ARCH).deb
# System tools the stages and tests use: bubblewrap (sandbox), GNU tar and
# compressors (tar stage), coreutils (copy stage), curl (curl sources),
# mmdebstrap and the archive keyring (bootstrap stage), tmux (the tests that
# drive the live view and --break in a pseudo-terminal), xfsprogs and attr
# (the store's flatten tests on an XFS loop image with reflinks), lintian
# (`make deb` checks the package it builds) and man-db (`man -w` finds the
# installed man pages), binutils (`make deb` strips the binaries); uidmap
# (newuidmap for rootless builds) and passt (pasta: network stages' own
# network); the image stages' tools, which run in the build root (the
# host's /usr when a pipeline has no build pipeline): fdisk (sfdisk:
# partition), e2fsprogs, dosfstools, mtools and util-linux (mkfs). qemu-utils
# (convert), qemu-system-x86 and ovmf come from `make qemu` (backports).
DEB_PACKAGES = bubblewrap uidmap passt curl tar gzip xz-utils zstd coreutils ca-certificates time mmdebstrap debian-archive-keyring dpkg-dev tmux xfsprogs attr lintian man-db binutils fdisk e2fsprogs dosfstools mtools

.PHONY: deps incus qemu build demo test bench lint install deb

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

# incus with its daemons, network and profiles (the incus-lxc backend and its
# tests); the script is idempotent, so a second run changes nothing.
incus:
	bash docs/incus-setup.sh

# qemu (the qemu backend, disk images booted in tests) and OVMF; idempotent.
qemu:
	bash docs/qemu-setup.sh

# Every test: unit tests of each crate and the integration tests in tests/it,
# which run the built binaries (so build them first). It installs what the
# tests run first, so that on a fresh machine this one command is enough.
test: deps incus qemu
	$(CARGO) build --workspace --bins --examples
	$(CARGO) test --workspace

# The engine (hello.json cold/warm), two pipelines in parallel against one
# after the other, the Debian bootstrap against bare mmdebstrap, package
# builds, the store (layers, branching, flatten), `strata store fsck` of a
# minbase object against `tar -cf /dev/null`, and execution environments
# (unshare, incus-lxc).
bench: deps build
	$(CARGO) bench -p strata-tests --bench overhead
	$(CARGO) bench -p strata-tests --bench build
	$(CARGO) bench -p strata-tests --bench parallel
	$(CARGO) bench -p strata-tests --bench debian
	$(CARGO) bench -p strata-tests --bench package
	$(CARGO) bench -p strata-tests --bench store
	$(CARGO) bench -p strata-tests --bench fsck
	$(CARGO) bench -p strata-tests --bench backend

# strata, its stages where it looks for them (PREFIX/lib/strata/stages,
# beside PREFIX/bin), a man page per command, shell completions and the
# schemas (for reference: strata has them compiled in).
install:
	$(CARGO) build --workspace --bins --profile $(PROFILE)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/strata/stages \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/strata \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(ZSH_COMPLETIONS) $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0755 $(BIN)/strata $(BIN)/strata-sandbox $(DESTDIR)$(PREFIX)/bin/
	for f in $(BIN)/strata-stage-*; do \
	  case $$f in *.d) continue ;; esac; \
	  install -m 0755 $$f $(DESTDIR)$(PREFIX)/lib/strata/stages/$${f##*/strata-stage-}; \
	done
	$(BIN)/strata manpages $(DESTDIR)$(PREFIX)/share/man/man1
	chmod 0644 $(DESTDIR)$(PREFIX)/share/man/man1/strata*.1
	$(BIN)/strata completions bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/strata
	$(BIN)/strata completions zsh > $(DESTDIR)$(ZSH_COMPLETIONS)/_strata
	$(BIN)/strata completions fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/strata.fish
	cp -r schemas $(DESTDIR)$(PREFIX)/share/strata/
	find $(DESTDIR)$(PREFIX)/share/strata -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +

# The binary package OUT/strata_VERSION_ARCH.deb, from `make install` with
# the tools dpkg-buildpackage itself uses (dpkg-shlibdeps, dpkg-gencontrol,
# dpkg-deb) over debian/control, changelog and copyright; then lintian must
# report no error. Not dpkg-buildpackage: the Rust toolchain strata needs
# (edition 2024) is newer than Debian 12's, so the build cannot be a
# Build-Depends; not cargo-deb: it is no Debian tool, and one more to install.
deb: deps
	@test "$$(dpkg-parsechangelog -SVersion)" = "$(VERSION)" || \
	  { echo "debian/changelog is at $$(dpkg-parsechangelog -SVersion), Cargo.toml at $(VERSION): add a changelog entry" >&2; exit 1; }
	rm -rf $(OUT)/deb
	$(MAKE) install PREFIX=/usr DESTDIR=$(abspath $(OUT)/deb/root)
	cd $(OUT)/deb/root && strip --remove-section=.comment --remove-section=.note --strip-unneeded \
	  usr/bin/strata usr/bin/strata-sandbox usr/lib/strata/stages/*
	gzip -9n $(OUT)/deb/root/usr/share/man/man1/*.1
	install -D -m 0644 debian/copyright $(OUT)/deb/root/usr/share/doc/strata/copyright
	gzip -9nc debian/changelog > $(OUT)/deb/root/usr/share/doc/strata/changelog.gz
	chmod 0644 $(OUT)/deb/root/usr/share/doc/strata/changelog.gz
	install -D -m 0644 debian/strata.lintian-overrides $(OUT)/deb/root/usr/share/lintian/overrides/strata
	mkdir -p $(OUT)/deb/root/DEBIAN
	dpkg-shlibdeps -T$(OUT)/deb/substvars $(OUT)/deb/root/usr/bin/strata $(OUT)/deb/root/usr/bin/strata-sandbox $(OUT)/deb/root/usr/lib/strata/stages/*
	dpkg-gencontrol -pstrata -P$(OUT)/deb/root -T$(OUT)/deb/substvars -f$(OUT)/deb/files
	cd $(OUT)/deb/root && find usr -type f -exec md5sum {} + | sort -k2 > DEBIAN/md5sums
	chmod 0644 $(OUT)/deb/root/DEBIAN/md5sums
	SOURCE_DATE_EPOCH=$$(dpkg-parsechangelog -STimestamp) \
	  dpkg-deb --root-owner-group -Zxz --build $(OUT)/deb/root $(DEB)
	lintian --fail-on error --suppress-tags-from-file /dev/null $(DEB)
	@echo "built: $$(realpath $(DEB))"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
