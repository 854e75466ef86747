#!/bin/sh
# Install what deblive needs on a fresh Debian machine (run as root):
# the Debian tools it drives, and the Python package in .venv with its
# dependencies. Idempotent and quick when everything is already there.
set -eu
cd "$(dirname "$0")/.."

DEBS="mmdebstrap debootstrap squashfs-tools xorriso mtools dosfstools
qemu-system-x86 qemu-utils ovmf ovmf-ia32 qemu-system-arm qemu-efi-aarch64 qemu-efi-arm
qemu-system-misc u-boot-qemu qemu-system-ppc
grub-common
qemu-user-static binfmt-support arch-test
distro-info-data debian-archive-keyring python3 python3-venv ca-certificates
util-linux mount file cpio zstd gpgv gpg rsync lintian apt-utils
diffoscope-minimal e2fsprogs fdisk cryptsetup-bin git chromium device-tree-compiler"

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (apt-get install, and builds need root)" >&2
    exit 2
fi

missing=""
for pkg in $DEBS; do
    status=$(dpkg-query -W -f '${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    case "$status" in
        ii*) ;;
        *) missing="$missing $pkg" ;;
    esac
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.deblive-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing deblive and its Python dependencies into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    touch "$stamp"
fi

# gitlab-ci-local runs the generated image pipeline in the matrix test
# (ci/gitlab-ci-local/package.json says which version and why its re2 is a stand-in).
gcl=ci/gitlab-ci-local
if [ ! -x "$gcl/node_modules/.bin/gitlab-ci-local" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
    fi
    echo "setup: installing gitlab-ci-local into $gcl"
    (cd "$gcl" && npm install --ignore-scripts --no-audit --no-fund --no-package-lock \
        --loglevel=error)
fi
