"""``reprolab shell [KERNEL]``: boot a kernel and an image and drop into the guest.

For exploring a bug by hand with exactly the guest a test case would get (same kernel spec,
image recipe, cmdline and devices). ``--exec CMD`` runs one command (over SSH when the image
has it, else on the serial console), prints its output and exits with its status; without
it the console is handed to the user (its socket, or ``virsh console`` for a guest on a
lab host; Ctrl-] leaves either). The guest is
destroyed on the way out either way, and its console log stays in the artifacts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from reprolab.case import CaseSpec
from reprolab.paths import default_artifacts


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "shell", help="boot a kernel and an image, then open its console or run one command")
    p.add_argument("kernel", nargs="?", default="stock",
                   help="kernel spec (stock, build:...; default: %(default)s)")
    p.add_argument("--image", default="minimal", help="image recipe (default: %(default)s)")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--memory", default="512M", help="guest memory (default: %(default)s)")
    p.add_argument("--cmdline", action="append", default=[], metavar="KEY[=VALUE]",
                   help="extra kernel command-line parameter (repeatable)")
    p.add_argument("--exec", dest="command", default=None, metavar="CMD",
                   help="run CMD in the guest, print its output, exit with its status")
    p.add_argument("--uri", default=None, help="libvirt URI (default qemu:///system)")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="where the console log goes (default ./artifacts/shell-<time>)")
    p.add_argument("--boot-timeout", type=float, default=180.0)
    p.set_defaults(func=main)


def _cmdline(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        out[key] = value if sep else None
    return out


def main(args: argparse.Namespace) -> int:
    from reprolab.run.session import Session
    from reprolab.virt import DEFAULT_URI

    case = CaseSpec.from_marker("shell", {
        "kernel": args.kernel,
        "guest": {"vcpus": args.vcpus, "memory": args.memory, "image": args.image},
        "cmdline": _cmdline(args.cmdline),
        "expect": {"kind": "panic"},
        "boot_timeout": args.boot_timeout,
        "dump": None,
    })
    artifacts = (args.artifacts or default_artifacts()
                 / f"shell-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    uri = args.uri or DEFAULT_URI
    session = Session(uri=uri, artifacts=artifacts)
    try:
        kernel = session.kernel(case.kernel, artifacts)
        image = session.image(case.guest.image, kernel)
        directory = session.attempt_dir(case, 1)
        guest, serial = session.boot(case, directory, kernel, image)
        try:
            if guest.fatal_event is not None:
                print(f"reprolab: the guest crashed while booting: {guest.fatal_event.line} "
                      f"(console: {directory / 'console.log'})", file=sys.stderr)
                return 1
            if args.command is not None:
                if guest.ssh is not None:
                    done = guest.ssh.run(args.command, timeout=3600, check=False)
                    sys.stdout.write(done.stdout)
                    sys.stderr.write(done.stderr)
                    return int(done.rc)
                # A subshell: an `exit` in CMD must not end the console's shell, whose
                # status line the harness waits for.
                res = guest.console.run(f"( {args.command}\n)", timeout=3600)
                sys.stdout.write(res.stdout)
                return res.rc
            from reprolab.console_socket import bridge
            from reprolab.proc import interactive

            guest.console.close()  # one reader of the console at a time: the user's
            print(f"reprolab: guest {guest.domain.name} ({kernel.release}, image "
                  f"{image.recipe}); Ctrl-] leaves and destroys it", file=sys.stderr)
            if guest.console.socket is not None:
                return bridge(guest.console.socket)
            return interactive(["virsh", "-c", uri, "console", "--force", guest.domain.name])
        finally:
            guest.close(keep=False, serial_log=serial, files=session.files)
    finally:
        session.close()
