"""Why a test case cannot run on this host, said before any guest boots.

A test case that needs a capability the host lacks must skip and name it: a built kernel
that is not in the cache (building one takes minutes, so the default run does not start
builds unless asked to), or hardware virtualisation that TCG does not have. Each function
returns None when the case can run, else the exact reason, for ``pytest.mark.skipif``.
"""

from __future__ import annotations

import os
from pathlib import Path

from reprolab.accel import detect_accel
from reprolab.errors import UserError

#: Set to 1 to let test cases build the kernels they name instead of skipping.
BUILD_ENV = "REPROLAB_BUILD_KERNELS"


def built_kernel_missing(spec: str, *, base_dir: Path | None = None) -> str | None:
    """None if the kernel ``spec`` names is cached (or building is allowed), else why not.

    ``base_dir`` is where relative paths in ``spec`` start, as for the marker: pass the
    test file's directory (``Path(__file__).parent``) for a spec with ``patches=patches``.
    """
    if os.environ.get(BUILD_ENV, "") in ("1", "yes", "true"):
        return None
    from reprolab.kernel.build import compute_key, kernels_dir
    from reprolab.kernel.spec import parse_kernel_spec

    parsed = parse_kernel_spec(spec, base_dir=base_dir)
    if parsed.build is None:
        return None
    try:
        key = compute_key(parsed.build)[0]
    except UserError as exc:
        return f"needs kernel {spec}, which cannot be built here: {exc}"
    if (kernels_dir() / key.name / "meta.json").exists():
        return None
    return (f"needs kernel {spec}, not in the kernel cache: build it with `reprolab "
            f"build-kernel {spec}` (minutes) or run with {BUILD_ENV}=1")


def unreliable_stacks(spec: str) -> str | None:
    """Why stack-derived titles of the cached kernel ``spec`` come out wrong, or None.

    A kernel built with the guessing unwinder marks every frame "?", and titles taken from
    the stack (soft lockups, hung tasks) then name the wrong function or "corrupted". Cases
    that check such titles are expected to fail on it, for that reason, until the build
    config changes.
    """
    from reprolab.kernel.build import compute_key, kernels_dir
    from reprolab.kernel.spec import parse_kernel_spec

    parsed = parse_kernel_spec(spec)
    if parsed.build is None:
        return None
    try:
        config = kernels_dir() / compute_key(parsed.build)[0].name / "config"
        text = config.read_text()
    except (UserError, OSError):
        return None
    if "CONFIG_UNWINDER_GUESS=y" in text.splitlines():
        return (f"kernel {spec} is built with CONFIG_UNWINDER_GUESS: every stack frame is "
                "'?', so titles taken from the stack name the wrong function or 'corrupted' "
                "(needs UNWINDER_ORC or FRAME_POINTER in reprolab.config)")
    return None


def nested_missing(flag: str) -> str | None:
    """None if a guest can be given nested ``flag`` ("vmx" or "svm"), else why not.

    Only the cheap checks of :func:`reprolab.accel.detect_accel` (no probe guest): this runs
    at collection time.
    """
    info = detect_accel()
    if flag == "svm" and info.accel == "tcg":
        return None  # TCG emulates SVM for a qemu64,+svm guest
    if info.nested == flag:
        return None
    if info.accel == "tcg":
        return (f"no {flag.upper()} here: guests run under TCG ({info.reason}), and TCG "
                f"emulates only SVM; run on a KVM host with {flag} and nested=1")
    return f"no nested {flag.upper()} on this KVM host: {info.nested_reason}"
