#!/usr/bin/env bash
# The project's own tests: set the machine up (idempotent), then lint, type-check and run the
# unit tests (no VM) and the integration tests (real guests under the local libvirtd).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$here/scripts/bootstrap.sh"
venv="${REPROLAB_VENV:-$here/.venv}"
cd "$here"
"$venv/bin/ruff" check reprolab tests bench testcases
"$venv/bin/mypy"
# The small 6.12 kernel the built-kernel cases and tests use: built once, then cached.
"$venv/bin/reprolab" build-kernel build:linux-source-6.12
# The field-bug kernel (every bug series in testcases/patches, one kernel) the controls use.
"$venv/bin/reprolab" build-kernel "$("$venv/bin/python" testcases/fieldkernel.py)"
# The nested Linux tests' kernel (both layers): the small one plus testcases/nested/kvmclock.config.
"$venv/bin/reprolab" build-kernel "build:linux-source-6.12+fragment=$here/testcases/nested/kvmclock.config"
status=0
# Unit tests, integration tests (real guests), then every field-bug case that can run here,
# one attempt each: CI proves every path; repro rates over many attempts are bench/'s job
# (bench/field_bugs.py).
# Two positive controls are not reliable yet (issue 12: the CFS walk ends as a soft lockup
# about as often as a hard lockup, the double_rq_lock ABBA as a watchdog hang without the
# frame): they run in bench/field_bugs.py and main.sh, not as CI gates, until retuned.
REPROLAB_BUILD_KERNELS=1 "$venv/bin/pytest" tests testcases -p no:cacheprovider \
  --reprolab-attempts=1 \
  --deselect testcases/test_cfs_unthrottle_hard_lockup.py::test_cfs_unthrottle_hard_lockup_field_kernel \
  --deselect testcases/test_double_rq_lock_reboot.py::test_double_rq_lock_deadlock_field_kernel \
  --junitxml=artifacts/junit-tests.xml -o junit_family=xunit1 --durations=40 "$@" || status=$?
# Leave no guest behind, whatever the tests did.
leftover=$(virsh -c qemu:///system list --name | sed '/^$/d' | grep '^rl-' || true)
if [ -n "$leftover" ]; then
  echo "test.sh: domains left running: $leftover" >&2
  status=1
fi
exit "$status"
