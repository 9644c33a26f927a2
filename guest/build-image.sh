#!/usr/bin/env bash
# Builds a VM guest image: Debian's cloud kernel plus a busybox initramfs whose /init loads
# the virtio modules, mounts /proc /sys /dev, names the virtio-serial ports the way udev
# would (/dev/virtio-ports/<name>) and runs the statically linked agent given with --agent.
#
# Usage: guest/build-image.sh --agent PATH [--identity PATH] [--services DIR] [--name NAME] [--cache-dir DIR] [--rebuild]
#   --agent PATH     static binary run as the guest's agent (respawned if it exits)
#   --identity PATH  static odyssey-identity (fresh RNG seed + hostname of a restored clone),
#                    installed as /sbin/odyssey-identity (default: odyssey-guest-identity
#                    next to the agent, if there is one)
#   --services DIR   qrexec services (executables) copied to /usr/local/etc/qubes-rpc; repeatable
#   --name NAME      image name (default: odyssey-vm)
#   --cache-dir DIR  where images and downloaded .debs live
#                    (default: $ODYSSEY_IMAGE_CACHE or /var/cache/odyssey/images)
#   --rebuild        ignore a cached image with the same inputs and build it again
#
# Progress goes to stderr, one line per step. The last line on stdout is the image
# directory, holding vmlinuz, initrd.img, manifest.txt and SHA256SUMS. An image is reused
# only when its inputs (kernel package version, agent and services checksums, this script) are the same
# and its SHA256SUMS still verify; anything else is rebuilt.
set -euo pipefail

name=odyssey-vm
agent=
identity=
services=()
cache=${ODYSSEY_IMAGE_CACHE:-/var/cache/odyssey/images}
rebuild=0
kernel_pkg=linux-image-cloud-amd64
# Modules the guest needs, in load order (the cloud kernel builds them as modules; PCI,
# the 8250 serial console, devtmpfs, hw_random and ext4 are built in).
modules=(
  kernel/drivers/virtio/virtio_ring
  kernel/drivers/virtio/virtio
  kernel/drivers/virtio/virtio_pci_legacy_dev
  kernel/drivers/virtio/virtio_pci_modern_dev
  kernel/drivers/virtio/virtio_pci
  kernel/drivers/char/virtio_console
  kernel/drivers/block/virtio_blk
  kernel/drivers/char/hw_random/virtio-rng
)

die() { echo "build-image: error: $*" >&2; exit 1; }
step() { echo "build-image: [$1] $2" >&2; }

while (($#)); do
  case "$1" in
    --agent) agent=${2:?--agent needs a path}; shift 2 ;;
    --identity) identity=${2:?--identity needs a path}; shift 2 ;;
    --services) services+=("${2:?--services needs a directory}"); shift 2 ;;
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --cache-dir) cache=${2:?--cache-dir needs a directory}; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n "$agent" ]] || die "--agent PATH is required"
[[ -f "$agent" && -x "$agent" ]] || die "agent $agent is not an executable file"
if [[ -z "$identity" && -x "$(dirname "$agent")/odyssey-guest-identity" ]]; then
  identity="$(dirname "$agent")/odyssey-guest-identity"
fi
[[ -z "$identity" || (-f "$identity" && -x "$identity") ]] || die "identity tool $identity is not an executable file"
for d in ${services[@]+"${services[@]}"}; do [[ -d "$d" ]] || die "services directory $d does not exist"; done
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "image name '$name' may only use [A-Za-z0-9._-]"
if command -v file >/dev/null && ! file -L "$agent" | grep -q 'statically linked\|static-pie'; then
  die "agent $agent is not statically linked (the initramfs has no C library)"
fi
busybox=$(command -v busybox || true)
[[ -n "$busybox" ]] || die "busybox not found (apt-get install busybox-static)"
file -L "$busybox" | grep -q 'statically linked\|static-pie' ||
  die "$busybox is not the static busybox (apt-get install busybox-static)"
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"

mkdir -p "$cache/debs"
# One builder at a time per cache (parallel tests share it).
exec 9>"$cache/.lock"
flock 9

# Step 1: resolve and fetch the kernel package.
step 1/5 "resolving $kernel_pkg"
resolve() { apt-cache depends "$kernel_pkg" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
real_pkg=$(resolve)
if [[ -z "$real_pkg" ]]; then
  step 1/5 "apt lists have no $kernel_pkg; running apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  real_pkg=$(resolve)
fi
[[ -n "$real_pkg" ]] || die "cannot resolve $kernel_pkg to a linux-image package"
version=$(apt-cache policy "$real_pkg" | awk '/Candidate:/{print $2}')
deb=$(ls "$cache/debs/${real_pkg}_"*"_amd64.deb" 2>/dev/null | head -n1 || true)
if [[ -z "$deb" ]]; then
  step 1/5 "downloading $real_pkg $version"
  (cd "$cache/debs" && apt-get download -q "$real_pkg" >&2 2>/dev/null) ||
    (cd "$cache/debs" && apt-get download "$real_pkg" >&2) ||
    die "apt-get download $real_pkg failed"
  deb=$(ls "$cache/debs/${real_pkg}_"*"_amd64.deb" | head -n1)
else
  step 1/5 "using cached $(basename "$deb")"
fi

# The image is keyed by everything that goes into it.
agent_sha=$(sha256sum "$agent" | cut -d' ' -f1)
identity_sha=none
[[ -z "$identity" ]] || identity_sha=$(sha256sum "$identity" | cut -d' ' -f1)
# Service files by name and content, in a stable order.
service_files() {
  local d f
  for d in ${services[@]+"${services[@]}"}; do
    for f in "$d"/*; do [[ -f "$f" && -x "$f" ]] && echo "$f"; done
  done
}
services_sha=$(service_files | while read -r f; do echo "$(basename "$f") $(sha256sum <"$f" | cut -d' ' -f1)"; done |
  sha256sum | cut -d' ' -f1)
key=$( { sha256sum "$deb" | cut -d' ' -f1; echo "$agent_sha"; echo "$identity_sha"; echo "$services_sha";
         sha256sum "$busybox" "$0" | cut -d' ' -f1; } | sha256sum | cut -c1-16)
out="$cache/$name-$key"

# Step 2: reuse a verified image.
step 2/5 "checking cache $out"
if ((!rebuild)) && [[ -f "$out/SHA256SUMS" ]]; then
  if (cd "$out" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
    step 5/5 "cached image verified, nothing to build"
    echo "$out"
    exit 0
  fi
  step 2/5 "cached image fails its checksums; rebuilding"
fi

work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Step 3: unpack the kernel and pick the modules.
step 3/5 "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$work/pkg"
kver=$(ls "$work/pkg/lib/modules" | head -n1)
[[ -n "$kver" && -f "$work/pkg/boot/vmlinuz-$kver" ]] || die "no kernel found in $deb"
root="$work/root"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules} "$root/usr/local/etc/qubes-rpc"
: >"$root/etc/modules.order"
for m in "${modules[@]}"; do
  src=$(ls "$work/pkg/lib/modules/$kver/$m.ko"* 2>/dev/null | head -n1 || true)
  [[ -n "$src" ]] || die "module $m not in $real_pkg"
  case "$src" in
    *.ko) cp "$src" "$root/lib/modules/" ;;
    *.ko.xz) xz -dc "$src" >"$root/lib/modules/$(basename "$m").ko" ;;
    *.ko.zst) zstd -qdc "$src" >"$root/lib/modules/$(basename "$m").ko" ;;
    *) die "unknown module compression: $src" ;;
  esac
  basename "$m" >>"$root/etc/modules.order"
done

# Step 4: the initramfs tree.
step 4/5 "assembling initramfs (busybox, agent, /init)"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$agent" "$root/sbin/odyssey-agent"
if [[ -n "$identity" ]]; then
  install -m 0755 "$identity" "$root/sbin/odyssey-identity"
else
  step 4/5 "no odyssey-identity given: restored clones cannot get a fresh RNG seed and hostname"
fi
service_files | while read -r f; do install -m 0755 "$f" "$root/usr/local/etc/qubes-rpc/$(basename "$f")"; done
echo "odyssey" >"$root/etc/hostname"
# busybox-static has no cksum applet; the services only compare two checksums, so md5sum does.
printf '#!/bin/sh\nexec /bin/busybox md5sum "$@"\n' >"$root/bin/cksum"
chmod 0755 "$root/bin/cksum"
cat >"$root/init" <<'EOF'
#!/bin/sh
# Odyssey guest init: modules, file systems, virtio port names, then the agent forever.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/virtio-ports
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
hostname -F /etc/hostname
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko || echo "odyssey-init: insmod $m failed" >/dev/console; done
# Ports show up once the host side has announced them; udev would make these links.
# The agent opens the control port 512 and the data ports 513-516 by name: wait for all.
want=org.odyssey.vchan.512
all_ports() { for n in 512 513 514 515 516; do [ -e "/dev/virtio-ports/org.odyssey.vchan.$n" ] || return 1; done; }
for i in $(seq 1 500); do
  for p in /sys/class/virtio-ports/*; do
    [ -f "$p/name" ] || continue
    n=$(cat "$p/name"); d=$(basename "$p")
    [ -n "$n" ] && [ -e "/dev/$d" ] && ln -sf "/dev/$d" "/dev/virtio-ports/$n"
  done
  all_ports && break
  sleep 0.01
done
if [ ! -e "/dev/virtio-ports/$want" ]; then
  echo "odyssey-init: no virtio port $want; modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')" >/dev/console
  echo "odyssey-init: virtio devices: $(ls /sys/bus/virtio/devices /sys/class/virtio-ports 2>&1 | tr '\n' ' ')" >/dev/console
fi
export VCHAN_BACKEND=virtio-serial VCHAN_VIRTIO_DIR=/dev/virtio-ports VCHAN_DOMAIN=1 HOME=/tmp
echo "odyssey-init: starting agent" >/dev/console
while true; do
  # qrexec-agent; services come from /usr/local/etc/qubes-rpc.
  /sbin/odyssey-agent </dev/null >/dev/console 2>&1
  echo "odyssey-init: agent exited ($?), restarting" >/dev/console
  sleep 1
done
EOF
chmod 0755 "$root/init"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible) |
  gzip -1 -n >"$work/initrd.img"

# Step 5: publish atomically with a manifest and checksums.
step 5/5 "writing $out"
stage="$work/out"
mkdir -p "$stage"
cp "$work/pkg/boot/vmlinuz-$kver" "$stage/vmlinuz"
mv "$work/initrd.img" "$stage/initrd.img"
{
  echo "name=$name"
  echo "kernel_package=$real_pkg"
  echo "kernel_package_version=$version"
  echo "kernel_version=$kver"
  echo "modules=$(tr '\n' ' ' <"$root/etc/modules.order")"
  echo "agent=$(readlink -f "$agent")"
  echo "agent_sha256=$agent_sha"
  echo "identity_sha256=$identity_sha"
  echo "services=$(service_files | xargs -r -n1 basename | tr '\n' ' ')"
  echo "services_sha256=$services_sha"
  echo "cmdline=console=ttyS0 panic=-1 quiet"
} >"$stage/manifest.txt"
(cd "$stage" && sha256sum vmlinuz initrd.img manifest.txt >SHA256SUMS)
rm -rf "$out"
mv "$stage" "$out"
echo "$out"
