#!/usr/bin/env bash
# The main job: set the machine up (idempotent), check the host, build the small 6.12 kernel
# the field-bug cases need (the first time only: cached after, a progress bar on a terminal,
# plain lines in CI) and the field-bug kernel (testcases/fieldkernel.py), then run
# every field-bug case that can run here, one attempt each (the positive controls hit 5/5 in
# bench/field_bugs.py, and the negative controls' rates are measured there, not here), and
# print the verdicts plus one line per skipped case saying what it needs. Extra arguments go
# to `reprolab run` (`--attempts 5` for the full counts, stopping at the first hit).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$here/scripts/bootstrap.sh"
venv="${REPROLAB_VENV:-$here/.venv}"
cd "$here"
"$venv/bin/reprolab" doctor
"$venv/bin/reprolab" build-kernel build:linux-source-6.12 >/dev/null
# The field-bug kernel (every bug series, testcases/fieldkernel.py) the controls run on.
"$venv/bin/reprolab" build-kernel "$("$venv/bin/python" testcases/fieldkernel.py)" >/dev/null
exec "$venv/bin/reprolab" run testcases --until first-hit --attempts 1 "$@"
