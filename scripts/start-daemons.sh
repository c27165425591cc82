#!/usr/bin/env bash
# virtlogd, then libvirtd, each started if it is not running, until libvirt's socket is there.
#
# No systemd on these machines, so by hand. libvirtd daemonises QEMU, whose orphan goes to
# the nearest subreaper, PID 1 by default; here PID 1 is not an init and reaps it ~1.2 s
# late, and libvirt's destroy polls kill(pid, 0), which a zombie still answers: every
# destroy took 1.2-1.6 s although QEMU exits in 10 ms after SIGTERM. Under `tini -s` (a
# subreaper that reaps at once) a destroy takes 0.2 s. Without tini: `libvirtd -d` as before.
set -euo pipefail
# QEMU's 16550 sends the console to the harness's unix socket one byte per send, each byte
# its own socket buffer: at Linux's default send budget (208 KiB) only a few hundred bytes
# can wait before QEMU gets EAGAIN. It retries those, except after virtlogd died: QEMU 7.2
# then writes the byte to its broken log pipe, the EPIPE replaces EAGAIN and the byte is
# dropped (13-38 lines of a 10000-line flood lost in 3 runs of 3; none at 4 MiB, 3 of 3).
# Raised, never lowered, and only the default (sockets that ask for a size keep it);
# `reprolab doctor` warns when it is lower.
wmem=$(sysctl -n net.core.wmem_default)
if [ "$wmem" -lt 4194304 ]; then
  sysctl -q -w net.core.wmem_default=4194304 \
    || echo "start-daemons: cannot raise net.core.wmem_default (see reprolab doctor)" >&2
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
if ! pgrep -x libvirtd >/dev/null; then
  if command -v tini >/dev/null; then
    setsid tini -s -- libvirtd </dev/null >>/var/log/reprolab-libvirtd.log 2>&1 &
  else
    libvirtd -d
  fi
fi
for _ in $(seq 100); do
  [ -S /var/run/libvirt/libvirt-sock ] && pgrep -x libvirtd >/dev/null && break
  sleep 0.1
done
