"""The field-bug kernel every positive and negative control runs on.

One kernel for all the bug series in ``patches/series`` (CI builds one extra kernel, not one
per bug): each mechanism is on by default and has a boot knob that turns it off, so a case
turns off the mechanisms it does not test and its negative control turns off its own.
Same config as reprolab's small kernel (``CONFIG_NR_CPUS=8`` there, so the hang cases get the
third vCPU that reports the two that wedge), so a warm ccache rebuilds only the patched files.
"""

from pathlib import Path

PATCHES = Path(__file__).resolve().parent / "patches"
BASE_KERNEL = "build:linux-source-6.12"
FIELD_KERNEL = f"{BASE_KERNEL}+patches={PATCHES}"

if __name__ == "__main__":
    # scripts/main.sh and scripts/test.sh build this kernel before the cases run.
    print(FIELD_KERNEL)
