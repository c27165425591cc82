"""The guest's SSH host key, generated once per image build and pinned by the harness.

The key is made on the host at image build, so its public half is known before the guest
ever boots: the SSH client accepts exactly that key (paramiko ``RejectPolicy``) and there is
no trust-on-first-use window in which any listener on the forwarded port would be believed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reprolab.proc import run


@dataclass(frozen=True)
class HostKey:
    #: OpenSSH-format private key (what openssh's sshd reads).
    openssh: Path
    #: Same key converted for dropbear.
    dropbear: Path
    #: ``ssh-ed25519 AAAA...`` line, without comment.
    public: str


def generate_host_key(directory: Path) -> HostKey:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "ssh_host_ed25519_key"
    for stale in (key, key.with_suffix(".pub"), directory / "dropbear_ed25519_host_key"):
        stale.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reprolab-guest", "-f", key])
    drop = directory / "dropbear_ed25519_host_key"
    run(["dropbearconvert", "openssh", "dropbear", key, drop])
    fields = Path(str(key) + ".pub").read_text().split()
    return HostKey(openssh=key, dropbear=drop, public=f"{fields[0]} {fields[1]}")
