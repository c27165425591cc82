#!/usr/bin/env bash
# The main job: set the machine up (idempotent), check the host, build the small 6.12 kernel
# the field-bug cases need (the first time only: cached after, a progress bar on a terminal,
# plain lines in CI) and its patched variant when testcases/patches/series exists, then run
# every field-bug case that can run here, each until its first hit, and print the verdicts
# plus one line per skipped case saying what it needs. Extra arguments go to `reprolab run`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$here/scripts/bootstrap.sh"
venv="${REPROLAB_VENV:-$here/.venv}"
cd "$here"
"$venv/bin/reprolab" doctor
"$venv/bin/reprolab" build-kernel build:linux-source-6.12 >/dev/null
if [ -f testcases/patches/series ]; then
  "$venv/bin/reprolab" build-kernel "build:linux-source-6.12+patches=testcases/patches" >/dev/null
fi
exec "$venv/bin/reprolab" run testcases "$@"
