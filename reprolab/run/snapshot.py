"""Fast retries: boot once, save the guest's state, restore it for every attempt.

Under TCG a boot is most of a short attempt, and a case whose scenario starts from a
freshly booted guest does not care whether that guest booted just now or was restored
from the state it had when it became ready. :class:`SnapshotSession` is a
:class:`Session` whose ``boot`` boots the first guest of each (kernel, image, guest
options) for real, saves it with ``virDomainSave`` once it reaches the ready marker, and
from then on gives every attempt a domain restored from that file
(``virDomainRestoreFlags(..., VIR_DOMAIN_SAVE_PAUSED)``, so the console is attached before
the guest runs again). Everything after boot (body, capture, triage, verdict) is the
ordinary session's. The guest is saved once its console shell answers, so a restore
starts at the prompt; with two or three saved guests, the next is restored while one runs
an attempt (:mod:`reprolab.run.prerestore`), so the next attempt only resumes it.

A disk-image guest (qcow2 overlay) is saved with its disk: the overlay as it was when the
RAM was saved is kept aside, and every restore gets a fresh copy of it
(:mod:`reprolab.run.snapdisk`), so one attempt's writes never reach the next. Guests on a
lab host (their overlay lives there) still boot cold.

Why a save file and not managed save or a snapshot: our domains are transient (nothing
to hang a managed save or a snapshot on), and a save file restores a transient domain of
the same name and XML in about a second. The price is AUTODESTROY: libvirt cannot give it to
a restored domain, so a restored guest would outlive a killed runner. Two things cover
that: the saved XML keeps the run's metadata tag (owner pid and start time), so the next
run's reaper destroys it once this process is gone, and :meth:`SnapshotSession.close`
destroys any restored guest still running and deletes the save files.

A scenario that depends on boot-time randomness or on the time since boot is not a
candidate: restore is opt-in (``reprolab repro
--snapshot``, the bisection oracle's ``snapshot=1``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprolab.case import CaseSpec
from reprolab.errors import InfraError
from reprolab.guest.handle import Guest
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.run import snapdisk
from reprolab.run.boot import SshTarget, bring_up
from reprolab.run.prerestore import PreRestore
from reprolab.run.session import Session
from reprolab.virt.domain import Domain
from reprolab.virt.hostfiles import LocalFiles

if TYPE_CHECKING:
    from reprolab.image.build import GuestImage

log = logging.getLogger(__name__)

BOOT_LOG = "boot-console.log"
#: Saved guests per kind, at most: one runs an attempt, one is restored ahead, one is dumped.
POOL_SIZE = 3
#: How long the console shell may take to answer before a save (once per saved guest).
SHELL_SYNC_S = 15.0
#: What a crashed 512 MiB guest's dump and triage take, until one was timed (1.2-1.7 s here).
EVIDENCE_GUESS_S = 1.5


@dataclass
class SavedGuest:
    """A guest saved right after it became ready."""

    path: Path
    name: str
    xml: str
    boot_log: Path
    serial: Path
    boot_seconds: float
    save_seconds: float
    ssh_port: int | None
    host_key: str | None
    cmdline: str
    #: (overlay the saved XML names, the overlay's state at save time) per writable disk.
    disks: tuple[tuple[Path, Path], ...] = ()
    #: The console shell answered before the save, so every restore starts at its prompt.
    shell_synced: bool = False

    def restore(self, conn: Any) -> Domain:
        """Its disks as they were at the save, and the domain restored from the file,
        paused: the one way back for an attempt and for a restore ahead of one."""
        for overlay, frozen in self.disks:
            snapdisk.thaw(frozen, overlay)
        return Domain.restore(conn, self.path, self.name, self.xml)


def _sync_before_save(guest: Guest) -> bool:
    """Wait for the console shell before the save, once, so every restore starts at its
    prompt: a disk image's marker comes from a unit, not from the shell, and a guest saved
    there would start its shell after every restore again. (An initramfs image's shell
    printed the marker itself; the probe then costs one round trip per saved guest.)
    False (and saved anyway) when the shell does not answer in :data:`SHELL_SYNC_S`: the
    restored consoles then probe as a booted one does."""
    try:
        guest.console.sync_shell(SHELL_SYNC_S)
    except InfraError as exc:
        log.warning("console shell of %s did not answer before the save: %s",
                    guest.domain.name, exc)
        return False
    return True


class SnapshotSession(Session):
    """A :class:`Session` that restores a saved post-boot state instead of booting."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The next restore of a dumped guest's name waits for its dump: no stepping aside.
        self.evidence_yields = False
        # The next attempt's guest is restored ahead instead (:mod:`.prerestore`).
        self.start_ahead = False
        #: Saved guests per (kernel, image, guest options): a second is booted and saved
        #: when the first is still being dumped (``overlap_teardown``) and enough attempts
        #: remain to repay a boot, a third when attempts still wait for the one restored
        #: ahead; attempts then take them in turn.
        self._saved: dict[str, list[SavedGuest]] = {}
        self._live: dict[str, Domain] = {}
        self._used: dict[str, int] = {}  # saved guest -> the attempt that last restored it
        self.restores = 0
        self.restore_seconds: list[float] = []
        #: How long the last attempt waited for its guest restored ahead (0: it was ready).
        self.last_restore_wait = 0.0
        #: The saved guest being restored while the current attempt runs, if any.
        self._ahead: PreRestore | None = None

    @staticmethod
    def _key(case: CaseSpec, kernel: KernelArtifacts, image: GuestImage) -> str:
        return json.dumps([kernel.key, image.key, case.guest, case.cmdline, case.hang_budget],
                          default=str, sort_keys=True)

    def boot(self, case: CaseSpec, directory: Path, kernel: KernelArtifacts,
             image: GuestImage) -> tuple[Guest, Path]:
        if image.disk is not None and not isinstance(self.files, LocalFiles):
            # The overlay lives on the lab host: no copy of it to restore from here.
            return super().boot(case, directory, kernel, image)
        pool = self._saved.setdefault(self._key(case, kernel, image), [])
        ahead = self._take_ahead(pool)
        free = [saved for saved in pool if not self.busy(saved.name)]
        grow = (ahead is not None and not ahead.done()
                and self._another_pays(case, pool, self.last_restore_wait))
        if grow:
            # The guest restored ahead still waits for its last dump: boot one more to
            # share the dumps among, and leave that one to the next attempt.
            self._ahead, ahead = ahead, None
        if ahead is not None:
            restored = self._restore(case, directory, ahead.saved, image, ahead=ahead)
        elif not grow and (free or (pool and not self._another_pays(
                case, pool, self.evidence_seconds or EVIDENCE_GUESS_S))):
            # The guest used longest ago: free, or (when none is) the nearest to done.
            oldest = min(free or pool, key=lambda saved: self._used.get(saved.name, -1))
            restored = self._restore(case, directory, oldest, image)
        else:
            guest, serial = super().boot(case, directory, kernel, image)
            if not guest.ready or guest.fatal_event is not None:
                return guest, serial  # died while booting: a verdict, nothing to save
            synced = _sync_before_save(guest)
            if guest.fatal_event is not None:
                return guest, serial  # died while its shell started: a verdict too
            saved = self._save(guest, serial, directory, image, shell_synced=synced)
            pool.append(saved)
            restored = self._restore(case, directory, saved, image)
        self._restore_ahead(case, pool, running=restored[0].domain.name)
        return restored

    def _take_ahead(self, pool: list[SavedGuest]) -> PreRestore | None:
        """The guest restored ahead for this attempt, if one of ``pool``'s was (one of
        another kind's is discarded: its attempts are over)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.saved not in pool:
            ahead.discard()
            return None
        return ahead

    def _restore_ahead(self, case: CaseSpec, pool: list[SavedGuest], running: str) -> None:
        """Restore the other saved guest while ``running``'s attempt runs, when an attempt
        is still to come (see :mod:`reprolab.run.prerestore`)."""
        others = [saved for saved in pool if saved.name != running]
        if (not self.overlap_teardown or not others or self._ahead is not None
                or self._attempt_index >= case.attempts):
            return
        saved = min(others, key=lambda other: self._used.get(other.name, -1))
        waits: list[Callable[[], None]] = [
            e.wait_released for e in self._evidence
            if e.guest.domain.name == saved.name and e.thread is not None]
        teardown = self._teardowns.get(saved.name)
        if teardown is not None:
            waits.append(teardown.join)
        conn = self.conn
        self._ahead = PreRestore(saved, tuple(waits), self._live.get(saved.name),
                                 lambda: saved.restore(conn), attach=self.console_ahead
                                 ).start()

    def _another_pays(self, case: CaseSpec, pool: list[SavedGuest], wait: float) -> bool:
        """Boot one more guest to restore while the others are dumped? Only when ``wait``,
        what each attempt still to come would otherwise wait for a restore (for a second
        guest: the last evidence's time; for a third: the last attempt's wait for the
        guest restored ahead), adds up to more than the first guest's boot and save took.

        Why a third: a restore waits for the dump and destroy of the last attempt on its
        name, so with two guests each has two attempts' time for its dump, destroy and
        restore (0.25 + 0.2 + 0.5 s here against 0.25-0.5 s sysrq attempts), and every
        other attempt waits. Measured, 24 attempts, twice: restored median 0.76/0.79 s with
        two guests, 0.58/0.61 s with a third (booted at the third attempt), whole runs
        27.1/27.8 s against 24.8/26.1 s. (Before dumps were written here, QEMU's 0.8 CPU s
        zlib dump bound the attempts by CPU and a third guest bought nothing.)"""
        if len(pool) >= POOL_SIZE or not self.overlap_teardown:
            return False
        to_come = case.attempts - self._attempt_index + 1
        cost = pool[0].boot_seconds + pool[0].save_seconds
        return to_come * wait > cost

    def _save(self, guest: Guest, serial: Path, directory: Path, image: GuestImage, *,
              shell_synced: bool) -> SavedGuest:
        domain = guest.domain
        xml = domain.live_xml()
        path = self.run_dir / f"{domain.name}.save"
        boot_log = self.run_dir / f"{domain.name}.{BOOT_LOG}"
        # The run dir may have been swept meanwhile; the save file needs its directory.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            # The XML with security labels and live ports: what restore must be given back.
            domain.save(path)
        except InfraError:
            guest.close(keep=False, serial_log=serial)
            raise
        disks = tuple((overlay, self.run_dir / f"{domain.name}.{i}.frozen.qcow2")
                      for i, overlay in enumerate(snapdisk.disk_sources(xml)))
        for overlay, frozen in disks:
            snapdisk.freeze(overlay, frozen)
        save_seconds = time.monotonic() - t0
        if guest.ssh is not None:
            guest.ssh.close()
        guest.console.close()
        shutil.copyfile(guest.console.log_path, boot_log)
        guest.console.log_path.rename(directory / BOOT_LOG)
        ssh_port = guest.ssh.port if guest.ssh is not None else None
        log.info("saved %s after boot (%.1f s boot, %.1f s save)", domain.name,
                 guest.boot_seconds or 0.0, save_seconds)
        return SavedGuest(path=path, name=domain.name, xml=xml, boot_log=boot_log,
                          serial=serial, boot_seconds=guest.boot_seconds or 0.0,
                          save_seconds=save_seconds, ssh_port=ssh_port,
                          host_key=image.host_key,
                          cmdline=(directory / "cmdline.txt").read_text().strip(),
                          disks=disks, shell_synced=shell_synced)

    def _restore(self, case: CaseSpec, directory: Path, saved: SavedGuest,
                 image: GuestImage, *, ahead: PreRestore | None = None
                 ) -> tuple[Guest, Path]:
        self._used[saved.name] = self._attempt_index
        log_path = directory / "console.log"
        with log_path.open("ab") as sink, saved.boot_log.open("rb") as src:
            shutil.copyfileobj(src, sink)
        t0 = time.monotonic()
        domain = ahead.take() if ahead is not None else None
        if ahead is not None:
            self.last_restore_wait = time.monotonic() - t0
        console = ahead.console if ahead is not None else None  # set only with a domain
        if domain is not None:
            # Restored ahead once the last attempt on it had let go of the name (its
            # triage may run on), the stale domain destroyed before that: never destroy it
            # again now, its handle names the same UUID as the restored one.
            self._live.pop(saved.name, None)
        else:
            ahead = None
            # The saved name is the only one libvirt restores under: the dump and destroy
            # of the last attempt on it must be over first, even when the session lets
            # them overlap the next attempt.
            self.finish_domain(saved.name)
            stale = self._live.pop(saved.name, None)
            if stale is not None:
                stale.destroy()
                stale.wait_gone()
            t0 = time.monotonic()
            domain = saved.restore(self.conn)
        self._live[saved.name] = domain
        (directory / "domain.xml").write_text(domain.live_xml())
        ssh = None
        if saved.ssh_port is not None and saved.host_key is not None:
            ssh = SshTarget(saved.ssh_port, saved.host_key)
        # The cold boot's own path past the ready marker: SSH through the lab host's
        # gateway, and a crash while SSH comes up is a verdict.
        guest = bring_up(self, case, domain, directory, saved.serial, ready_marker=None,
                         ssh=ssh, t0=t0, console=console)
        if saved.shell_synced:
            guest.console.assume_synced()
        seconds = guest.boot_seconds or 0.0
        self.restores += 1
        self.restore_seconds.append(seconds)
        (directory / "snapshot.json").write_text(json.dumps({
            "restored_from": str(saved.path), "boot_seconds": saved.boot_seconds,
            "save_seconds": round(saved.save_seconds, 3),
            "restore_seconds": round(seconds, 3),
            # Restored while the attempt before ran: how long that took, off this one's path.
            "restored_ahead_seconds": (round(ahead.seconds, 3)
                                       if ahead is not None and ahead.seconds is not None
                                       else None),
            "console_attached_ahead": console is not None,
            "disks": [str(overlay) for overlay, _ in saved.disks],
        }, indent=2) + "\n")
        (directory / "cmdline.txt").write_text(saved.cmdline + "\n")
        self._write_bundle(case, directory, domain, saved.cmdline)
        return guest, saved.serial

    def _write_bundle(self, case: CaseSpec, directory: Path, domain: Domain, cmdline: str
                      ) -> None:
        from reprolab.replay import write_attempt_bundle_safely

        kernel = self.kernel(case.kernel, directory)
        image = self.image(case.guest.image, kernel)
        write_attempt_bundle_safely(
            directory, case=case, kernel_spec=self.kernel_override or case.kernel,
            kernel=kernel, image=image, cmdline=cmdline, domain_xml=domain.xml,
            portable=self.portable_bundles)

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.discard()
            self._ahead = None
        self.finish_teardowns()
        for domain in self._live.values():
            domain.destroy()
        self._live.clear()
        for saved in (saved for pool in self._saved.values() for saved in pool):
            with contextlib.suppress(OSError):
                saved.path.unlink()
            with contextlib.suppress(OSError):
                saved.boot_log.unlink()
            for _, frozen in saved.disks:
                frozen.unlink(missing_ok=True)
        self._saved.clear()
        super().close()
