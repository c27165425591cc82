"""A miniature kernel tree for tests: the files reprolab looks at, and a Makefile that
answers the targets a build runs, so cache, lock and log handling are tested in seconds.
The real build of a real tree is tests/integration/test_kernel_build.py."""

from __future__ import annotations

from pathlib import Path

from reprolab.proc import run

MAKEFILE = """\
VERSION = 6
PATCHLEVEL = 12
SUBLEVEL = 0
O ?= .
.PHONY: tinyconfig defconfig olddefconfig bzImage modules vmlinux kernelrelease modules_install
tinyconfig defconfig:
\tmkdir -p $(O)
\tprintf 'CONFIG_X86=y\\n# CONFIG_SHMEM is not set\\n' > $(O)/.config
olddefconfig:
\tpython3 $(CURDIR)/fake_olddefconfig.py $(O)/.config
bzImage modules vmlinux:
\tmkdir -p $(O)/arch/x86/boot
\tcat init/main.c > $(O)/arch/x86/boot/bzImage
\tcat init/main.c > $(O)/vmlinux
\ttouch $(O)/System.map
\t@grep -q BROKEN init/main.c && \\
\t  { echo 'init/main.c:1:1: error: expected ; before }'; exit 1; } || true
kernelrelease:
\t@echo 6.12.0-fake
modules_install:
\tmkdir -p $(INSTALL_MOD_PATH)/lib/modules/6.12.0-fake
\ttouch $(INSTALL_MOD_PATH)/lib/modules/6.12.0-fake/modules.dep
\tln -sfn $(O) $(INSTALL_MOD_PATH)/lib/modules/6.12.0-fake/build
"""

# TMPFS needs SHMEM, as in the real tree; SHMEM stays as the base left it.
OLDDEFCONFIG = """\
import re, sys
path = sys.argv[1]
lines = open(path).read().splitlines()
values = {}
for line in lines:
    m = re.match(r"CONFIG_(\\w+)=(.*)", line)
    if m:
        values[m[1]] = m[2]
out = []
for line in lines:
    if line.startswith("CONFIG_TMPFS=") and values.get("SHMEM") != "y":
        continue
    out.append(line)
open(path, "w").write("\\n".join(out) + "\\n")
"""

KCONFIG = """\
source "arch/$(SRCARCH)/Kconfig"
config SHMEM
\tbool "shmem"
config TMPFS
\tbool "tmpfs"
\tdepends on SHMEM
"""


def make_tree(root: Path, *, git: bool = False) -> Path:
    """A fake kernel tree at ``root`` (a git repo with one commit when ``git``)."""
    files = {
        "Makefile": MAKEFILE,
        "fake_olddefconfig.py": OLDDEFCONFIG,
        "Kconfig": KCONFIG,
        "arch/x86/Kconfig": "config X86\n\tdef_bool y\n",
        "scripts/kconfig/README": "kconfig\n",
        "init/main.c": "int main(void)\n{\n\treturn 0;\n}\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if git:
        git_cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
        run(["git", "init", "-q", str(root)])
        run([*git_cmd, "add", "-A"])
        run([*git_cmd, "commit", "-q", "-m", "base"])
    return root


def diff(path: str, old: str, new: str) -> str:
    """A unified diff replacing line ``old`` with ``new`` in ``init/main.c``-like files."""
    return (
        f"--- a/{path}\n+++ b/{path}\n@@ -1,4 +1,4 @@\n int main(void)\n {{\n"
        f"-{old}\n+{new}\n }}\n"
    )
