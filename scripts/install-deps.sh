#!/usr/bin/env bash
# Installs everything Odyssey needs to build, test and run on Debian 12, with apt-get.
# Idempotent: installs only what is missing, so a second run is quick and changes nothing.
# Usage: scripts/install-deps.sh [--fuzz]   (--fuzz adds clang and libFuzzer's runtime)
set -euo pipefail

packages=(
  # toolchain and build
  build-essential cmake ninja-build ccache pkg-config git
  # test and benchmark frameworks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # libraries the code links against (README explains each)
  libboost-dev libboost-system-dev libtbb-dev libsqlite3-dev sqlite3 nlohmann-json3-dev
  libcli11-dev libspdlog-dev libfmt-dev libseccomp-dev libmagic-dev libxen-dev libvirt-dev
  libpng-dev libcairo2-dev libssl-dev
  libxcb1-dev libxcb-composite0-dev libxcb-damage0-dev libxcb-xtest0-dev libxcb-xfixes0-dev
  libxcb-keysyms1-dev libxcb-icccm4-dev libxcb-shm0-dev libxcb-image0-dev
  # run-time tools: X server for GUI tests, QEMU + embedded libvirt, guest image parts
  xvfb xauth x11-apps x11-utils qemu-system-x86 qemu-utils libvirt-daemon
  libvirt-daemon-driver-qemu busybox-static cpio poppler-utils xdg-utils file
  procps iproute2 util-linux python3 gnuplot-nox
)
# Modules may list extra packages, one per line, in scripts/deps.d/*.txt.
for f in "$(dirname "$0")"/deps.d/*.txt; do
  [[ -f "$f" ]] || continue
  while read -r p _; do
    if [[ -n "$p" && "$p" != \#* ]]; then packages+=("$p"); fi
  done <"$f"
done
if [[ "${1:-}" == "--fuzz" ]]; then
  packages+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: must run as root to install packages (or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} packages present"
fi

# Embedded libvirt (qemu:///embed) looks up the distribution's QEMU user even when
# qemu.conf names another one; the libvirt-daemon package creates it only with its
# post-install scripts, which --no-install-recommends setups may lack.
if [[ $(id -u) -eq 0 ]]; then
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  getent passwd libvirt-qemu >/dev/null ||
    useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
fi
