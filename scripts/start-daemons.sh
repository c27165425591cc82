#!/usr/bin/env bash
# virtlogd, then libvirtd, each started if it is not running, until libvirt's socket is there.
#
# No systemd on these machines, so by hand. libvirtd daemonises QEMU, whose orphan goes to
# the nearest subreaper, PID 1 by default; here PID 1 is not an init and reaps it ~1.2 s
# late, and libvirt's destroy polls kill(pid, 0), which a zombie still answers: every
# destroy took 1.2-1.6 s although QEMU exits in 10 ms after SIGTERM. Under `tini -s` (a
# subreaper that reaps at once) a destroy takes 0.2 s. Without tini: `libvirtd -d` as before.
set -euo pipefail
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
