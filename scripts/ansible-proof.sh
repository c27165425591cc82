#!/usr/bin/env bash
# Proof that reprolab's ansible roles do what they say, on this machine (connection: local):
#   1. ansible-lint is clean on ansible/;
#   2. site.yml applies for real (failed=0);
#   3. a second application changes nothing (changed=0, failed=0): the roles are idempotent;
#   4. libvirt answers over qemu+ssh://root@127.0.0.1/system without a prompt.
# Each step prints one "ansible-proof: ..." line; the recaps are kept in $REPROLAB_PROOF_LOGS
# (default /tmp/reprolab-ansible-proof). Must run as root: it installs packages and starts
# daemons. It never restarts a running libvirtd.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${REPROLAB_VENV:-$here/.venv}"
logs="${REPROLAB_PROOF_LOGS:-/tmp/reprolab-ansible-proof}"
uri="qemu+ssh://root@127.0.0.1/system"

if [ "$(id -u)" != 0 ]; then
  echo "ansible-proof: must run as root (the roles install packages and start daemons)" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "ansible-proof: no virtualenv at $venv (run scripts/bootstrap.sh or set REPROLAB_VENV)" >&2
  exit 2
fi
if [ ! -x "$venv/bin/ansible-playbook" ] || [ ! -x "$venv/bin/ansible-lint" ]; then
  echo "ansible-proof: installing ansible-core and ansible-lint into $venv"
  "$venv/bin/pip" install -q ansible-core ansible-lint
fi
mkdir -p "$logs"
export ANSIBLE_CONFIG="$here/ansible/ansible.cfg"
export ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 NO_COLOR=1 PY_COLORS=0
export PATH="$venv/bin:$PATH"
cd "$here/ansible"

if ! ansible-lint --nocolor >"$logs/lint.log" 2>&1; then
  cat "$logs/lint.log" >&2
  echo "ansible-proof: lint: FAILED (log: $logs/lint.log)" >&2
  exit 1
fi
echo "ansible-proof: lint: clean ($(grep -Eo 'in [0-9]+ files processed' "$logs/lint.log" || true))"

# One application; prints "ansible-proof: apply N: <recap of localhost> in S s".
apply() {
  local n=$1 log="$logs/apply$1.log" start end rc=0
  start=${EPOCHREALTIME/./}
  ansible-playbook -i inventories/local/hosts.yml playbooks/site.yml \
    -e "reprolab_runner_source=$here" >"$log" 2>&1 </dev/null || rc=$?
  end=${EPOCHREALTIME/./}
  recap=$(sed -n '/^PLAY RECAP/,$p' "$log" | grep -E '^localhost +:' | sed -E 's/^localhost +: +//; s/ +/ /g; s/ $//')
  tenths=$(( (end - start) / 100000 ))
  printf 'ansible-proof: apply %s: %s in %d.%d s\n' "$n" "${recap:-no recap}" $((tenths / 10)) $((tenths % 10))
  if [ "$rc" != 0 ]; then
    tail -40 "$log" >&2
    echo "ansible-proof: apply $n: ansible-playbook exited $rc (log: $log)" >&2
    exit 1
  fi
}

apply 1
apply 2
case " $recap " in
  *" changed=0 "*" failed=0 "*) echo "ansible-proof: idempotent: the second application changed nothing" ;;
  *)
    grep -B1 -E '^changed:' "$logs/apply2.log" | grep '^TASK' >&2 || true
    echo "ansible-proof: idempotent: NO, the second application changed something (log: $logs/apply2.log)" >&2
    exit 1
    ;;
esac

# libvirt's ssh transport with no_tty=1 runs ssh with BatchMode: a missing key or an
# unknown host key fails here instead of waiting for a password.
if out=$(timeout 60 virsh -c "$uri?no_tty=1" version </dev/null 2>&1); then
  echo "ansible-proof: $uri: $(echo "$out" | grep -E '^Running hypervisor' || echo "$out" | tail -1)"
else
  echo "$out" >&2
  echo "ansible-proof: $uri: FAILED" >&2
  exit 1
fi
echo "ansible-proof: ok"
