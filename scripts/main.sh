#!/usr/bin/env bash
# The main job: set the machine up (idempotent), check the host, reproduce the bundled field
# bugs on the stock kernel and print the verdicts. Extra arguments go to `reprolab run`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$here/scripts/bootstrap.sh"
venv="${REPROLAB_VENV:-$here/.venv}"
cd "$here"
"$venv/bin/reprolab" doctor
exec "$venv/bin/reprolab" run testcases "$@"
