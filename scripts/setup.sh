#!/usr/bin/env bash
# Set up everything MooseNG needs on a Debian machine: system packages (apt-get)
# and a .venv with the project and its dev tools. Idempotent: a second run only
# checks, and reinstalls Python packages only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the project needs; installed whenever one is missing (iproute2 and
# iptables: the nemesis suite's network namespaces and partitions, docs/nemesis.md).
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev fio git make iproute2 iptables)
# Only where python3 cannot make a virtualenv by itself.
APT_FOR_VENV=(python3-venv)

missing() {
    local pkg out=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || out+=("$pkg")
    done
    echo "${out[@]:-}"
}

apt_install() {
    echo "setup: installing Debian packages: $*"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

need=$(missing "${APT_PACKAGES[@]}")
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need="$need $(missing "${APT_FOR_VENV[@]}")"
fi
# shellcheck disable=SC2086  # word splitting of the package list is intended
[ -z "${need// /}" ] || apt_install $need

if ! python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup: MooseNG needs Python 3.11; python3 is $(python3 --version 2>&1)" >&2
    exit 1
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
