"""Does the guest a case asks for fit the kernel that will run it?

A kernel built for fewer CPUs than the guest has boots anyway and ignores the rest ("CPU
limit of 2 reached"): tinyconfig leaves ``CONFIG_NR_CPUS=2``. A hang case that needs a third,
healthy vCPU to report the two that wedge then runs on two and can never report; nothing says
why. So the case is refused before the first boot, naming the option to raise.
"""

from __future__ import annotations

from reprolab.errors import UserError
from reprolab.kernel.artifacts import KernelArtifacts


def max_cpus(kernel: KernelArtifacts) -> int | None:
    """CPUs the kernel brings up at most, or None when its config is unknown."""
    if kernel.config is None or not kernel.config.exists():
        return None
    if kernel.config_value("SMP") != "y":
        return 1
    value = kernel.config_value("NR_CPUS")
    if value is None or not value.isdigit():
        return None
    return int(value)


def check_vcpus(kernel: KernelArtifacts, vcpus: int, *, where: str) -> None:
    """UserError when ``vcpus`` is more than the kernel can bring up."""
    limit = max_cpus(kernel)
    if limit is not None and vcpus > limit:
        option = "CONFIG_SMP=y" if limit == 1 else f"CONFIG_NR_CPUS={vcpus} or more"
        raise UserError(
            f"{where}: guest vcpus={vcpus} but kernel {kernel.release} ({kernel.key}) brings up "
            f"at most {limit} CPU(s) and would ignore the rest; build it with {option} "
            f"(a config fragment) or ask for {limit} vcpus")
