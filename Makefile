# deblive: the commands the README gives. All targets set up first (idempotent).
ISO = out/deblive/deblive-$(shell . /etc/os-release && echo $$VERSION_CODENAME)-$(shell dpkg --print-architecture).iso
PYTEST = .venv/bin/pytest

.PHONY: setup image test test-fast test-ci test-extended lint bench bench-squash bench-initramfs

setup:
	./scripts/setup.sh

# Build the default image and prove it boots in every firmware mode.
image: setup
	.venv/bin/deblive build --force
	.venv/bin/deblive test $(ISO)

# The whole test suite as CI runs it: unit tests, then real builds and boots.
test: test-ci

test-ci: setup lint
	$(PYTEST) --durations=40 tests/unit tests/integration

# Unit tests only: no root, no network, seconds.
test-fast: setup
	$(PYTEST) tests/unit

# Full boot matrices, fault injection, flavours: long.
test-extended: setup
	$(PYTEST) tests/extended

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: setup
	.venv/bin/python bench/build_vs_live_build.py

bench-squash: setup
	.venv/bin/python bench/squash_options.py

bench-initramfs: setup
	.venv/bin/python bench/initramfs_options.py
