"""From a :class:`KernelSpec` to a bootable :class:`KernelArtifacts`, whatever its origin.

The one entry point the guest layer, the pytest plugin and the CLI call: they never need to
know whether the kernel is the host's stock one or a (cached) build.
"""

from __future__ import annotations

from pathlib import Path

from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel
from reprolab.kernel.build import Progress, build_kernel
from reprolab.kernel.spec import KernelSpec, parse_kernel_spec


def resolve_kernel(
    spec: KernelSpec | str,
    *,
    artifacts_dir: Path | None = None,
    progress: Progress | None = None,
    bisecting: bool = False,
) -> KernelArtifacts:
    """The kernel ``spec`` names, built (or taken from the cache) if it is a build.

    ``artifacts_dir`` receives a copy of the build log; ``progress`` is called with one-line
    status messages; ``bisecting`` makes build failures :class:`UntestableError`.
    """
    parsed = parse_kernel_spec(spec) if isinstance(spec, str) else spec
    if parsed.build is None:
        return stock_kernel()
    return build_kernel(
        parsed.build, artifacts_dir=artifacts_dir, progress=progress, bisecting=bisecting
    )
