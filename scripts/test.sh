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
status=0
"$venv/bin/pytest" tests "$@" || status=$?
# Leave no guest behind, whatever the tests did.
leftover=$(virsh -c qemu:///system list --name | sed '/^$/d' | grep '^rl-' || true)
if [ -n "$leftover" ]; then
  echo "test.sh: domains left running: $leftover" >&2
  status=1
fi
exit "$status"
