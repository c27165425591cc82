#!/usr/bin/env bash
# Bring a fresh Debian 12 machine to the point where reprolab can run: Debian packages,
# the daemons (no systemd here, so by hand), and a virtualenv with reprolab installed.
# Idempotent: every step checks before it acts, so a second run takes seconds.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${REPROLAB_VENV:-$here/.venv}"
stamp="$venv/.reprolab-bootstrap"

debs=(
  # libvirt and QEMU: the guests
  qemu-system-x86 qemu-utils
  # a subreaper for libvirtd, so a destroyed QEMU is reaped at once (scripts/start-daemons.sh)
  tini
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  # the virtualenv (libvirt-python compiles against libvirt-dev)
  pkg-config gcc python3-dev python3-venv
  # the stock kernel and what the minimal guest and dumps need
  linux-image-amd64 busybox-static kmod cpio zstd crash
  openssh-client openssh-server
  # programs the image recipes copy into guests (images/*.yaml take them from the host)
  util-linux procps iproute2 stress-ng rt-tests kexec-tools dropbear-bin fuse3 e2fsprogs
  libc6-dev mmdebstrap
  # kernel builds (reprolab build-kernel) and Debian's kernel source
  build-essential bc bison flex libelf-dev libssl-dev ccache dwarves xz-utils rsync git
  linux-source-6.12
)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Daemons: virtlogd keeps the console <log> copy, libvirtd runs the domains (under tini:
# see the script).
"$here/scripts/start-daemons.sh"

# QEMU runs as libvirt-qemu and cannot read under /root: caches live under /var/lib.
install -d -m 0755 /var/lib/reprolab

reqhash=$(sha256sum "$here/pyproject.toml" | cut -c1-16)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$reqhash" ]; then
  echo "bootstrap: installing reprolab into $venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[dev]"
  echo "$reqhash" >"$stamp"
fi
