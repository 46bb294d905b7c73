#!/usr/bin/env bash
# Build (once, cached) what the emulated aarch64 job needs, on an x86_64 Debian 12 host:
#   $CACHE/root   an arm64 sysroot from Debian's arm64 packages, made without chroot or root:
#                 a private apt state downloads the closure of python3.11, libstdc++6, libgomp1;
#                 `dpkg -x` unpacks each; lib/bin/sbin become links into usr/ (merged /usr).
#   $CACHE/site   the aarch64 wheels from PyPI (pinned to the host venv's versions), pip-installed
#                 with --target for CPython 3.11 manylinux aarch64.
# qemu-user-static is installed from Debian's packages when missing (needs root).
# Usage: ci/aarch64/setup.sh REQUIREMENTS_FILE     (CACHE defaults to .cache/aarch64)
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${FLEETLEARN_AARCH64_CACHE:-$PWD/.cache/aarch64}
REQS=${1:?usage: ci/aarch64/setup.sh REQUIREMENTS_FILE}
PACKAGES="python3.11 libstdc++6 libgomp1"  # the interpreter; libstdc++/libgomp for onnxruntime
SUITES="bookworm bookworm-updates"
MIRROR=${FLEETLEARN_DEBIAN_MIRROR:-http://deb.debian.org}
PYTHON=${PYTHON:-python3}  # the host interpreter whose pip downloads the wheels
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

die() { echo "aarch64 setup: error: $*" >&2; exit 1; }
say() { echo "aarch64 setup: $*" >&2; }

ensure_qemu() {
  command -v qemu-aarch64-static >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing qemu-user-static from Debian's packages ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null \
      || die "apt-get install qemu-user-static failed"
  else
    die "qemu-aarch64-static is missing; run: sudo apt-get install -y qemu-user-static"
  fi
}

# A private apt (own lists, cache, empty dpkg status, arm64 only): the host's dpkg is untouched.
apt_private() {
  local a=$CACHE/apt
  apt-get -q -o Dir::State="$a/state" -o Dir::State::status="$a/state/status" \
    -o Dir::Cache="$a/cache" -o Dir::Cache::archives="$CACHE/debs" \
    -o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts="$a/sources.list.d" \
    -o Dir::Etc::Preferences="$a/preferences" -o Dir::Etc::PreferencesParts="$a/preferences.d" \
    -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Install-Recommends=false \
    -o Debug::NoLocking=1 "$@"
}

build_sysroot() {
  local stamp=$CACHE/root/.fleetlearn-sysroot key="$PACKAGES|$SUITES|v1"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && return 0
  command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 \
    || die "building the arm64 sysroot needs apt-get and dpkg (a Debian host)"
  [ -r "$KEYRING" ] || die "$KEYRING is missing (package debian-archive-keyring)"
  say "building the arm64 sysroot from Debian's arm64 packages ($PACKAGES) ..."
  local a=$CACHE/apt
  rm -rf "$a" "$CACHE/debs" "$CACHE/root"
  mkdir -p "$a/state/lists/partial" "$a/cache/archives/partial" "$a/sources.list.d" \
    "$a/preferences.d" "$CACHE/debs/partial" "$CACHE/root"
  : >"$a/state/status"
  : >"$a/sources.list"
  for suite in $SUITES; do
    echo "deb [arch=arm64 signed-by=$KEYRING] $MIRROR/debian $suite main" >>"$a/sources.list"
  done
  echo "deb [arch=arm64 signed-by=$KEYRING] $MIRROR/debian-security bookworm-security main" >>"$a/sources.list"
  apt_private update >/dev/null || die "apt-get update (arm64, private state) failed"
  # With an empty status file apt resolves the whole dependency closure (libc6 included).
  apt_private -y --download-only install $PACKAGES >/dev/null || die "apt-get download of $PACKAGES failed"
  local deb
  for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$CACHE/root"; done
  # Merged /usr: bookworm's packages still ship /lib and /bin; the loader path is /lib/ld-linux-...
  local d
  for d in bin sbin lib; do
    if [ -d "$CACHE/root/$d" ] && [ ! -L "$CACHE/root/$d" ]; then
      mkdir -p "$CACHE/root/usr/$d"
      cp -a "$CACHE/root/$d/." "$CACHE/root/usr/$d/"
      rm -rf "${CACHE:?}/root/$d"
    fi
    ln -sfn "usr/$d" "$CACHE/root/$d"
  done
  # qemu-user 7.2 shows the guest the host's x86 /proc/cpuinfo, and onnxruntime's CPU probe then
  # segfaults; `-L ROOT` finds ROOT/proc/cpuinfo first, so an ARM (Neoverse-N1-like) one fixes it.
  mkdir -p "$CACHE/root/proc"
  cp ci/aarch64/cpuinfo "$CACHE/root/proc/cpuinfo"
  echo "$key" >"$stamp"
  say "sysroot ready: $(find "$CACHE/debs" -name '*.deb' | wc -l) packages"
}

install_wheels() {
  local stamp=$CACHE/site/.fleetlearn-requirements
  [ -f "$stamp" ] && cmp -s "$stamp" "$REQS" && return 0
  say "installing aarch64 wheels from PyPI: $(tr '\n' ' ' <"$REQS")"
  local plat=(--platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64
    --platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.11
    --implementation cp --abi cp311)
  rm -rf "$CACHE/site"
  mkdir -p "$CACHE/wheels"
  # onnxruntime's aarch64 wheels are tagged manylinux_2_28 only: without that tag pip silently
  # picks the old 1.16.3 (FACTS.md).
  "$PYTHON" -m pip download -q --disable-pip-version-check -d "$CACHE/wheels" "${plat[@]}" -r "$REQS" \
    2> >(grep -v 'is ignored: it is neither' >&2) || die "pip download of the aarch64 wheels failed"
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --find-links "$CACHE/wheels" \
    --target "$CACHE/site" "${plat[@]}" -r "$REQS" \
    2> >(grep -v -e 'is ignored: it is neither' -e "Running pip as the 'root' user" >&2) \
    || die "pip install --target of the aarch64 wheels failed"
  cp "$REQS" "$stamp"
}

ensure_qemu
build_sysroot
install_wheels
