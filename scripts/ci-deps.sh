#!/usr/bin/env bash
# Installs the command-line tools the tests run, when any is missing (Debian and Ubuntu):
# GNU tar, bsdtar (libarchive-tools), git, zstd, xz, bzip2, gzip, pigz, zip, lz4, openssl and split (coreutils). The
# tests build their archives with them at test time (tests/corpus.py). Idempotent and quiet:
# when every tool is there it does nothing, not even `apt-get update`; otherwise one update
# and one install, as root (or through sudo).
#   bash scripts/ci-deps.sh          # then: bash scripts/test.sh
set -euo pipefail

declare -A PACKAGE=([tar]=tar [bsdtar]=libarchive-tools [git]=git [zstd]=zstd [xz]=xz-utils [pigz]=pigz [zip]=zip [lz4]=lz4 [openssl]=openssl
                    [bzip2]=bzip2 [gzip]=gzip [split]=coreutils)

missing() {
    local tool
    for tool in "${!PACKAGE[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || echo "${PACKAGE[$tool]}"
    done
    # The reference extraction is GNU tar's own (busybox's tar is not enough).
    if command -v tar >/dev/null 2>&1 && ! tar --version 2>/dev/null | grep -q 'GNU tar'; then
        echo tar
    fi
}

mapfile -t packages < <(missing | sort -u)
if [[ ${#packages[@]} -eq 0 ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the tests need ${packages[*]} (Debian package names) and there is no apt-get: install them" >&2
    exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
mapfile -t still < <(missing | sort -u)
if [[ ${#still[@]} -ne 0 ]]; then
    echo "error: still missing after apt-get install: ${still[*]}" >&2
    exit 1
fi
