"""Replay bundles: everything needed to run an attempt again, in one directory.

A repro that cannot be rerun is an anecdote. Every run writes a bundle next to its artifacts
(``bundle.json`` plus copies of the files it names), and ``reprolab repro --bundle DIR``
runs the same kernel, image and guest from it. Files are copied, not referenced: the
.config and patches of a bisection step, or a scratch domain XML, are gone by the time
someone wants the replay.

A bundle is untrusted input: it may come from a bug tracker or a colleague's tarball. So
everything a replay uses is named in the manifest by a relative path that must stay inside
the bundle (no absolute paths, no ``..``, no symlink out) together with its sha256, and is
checked on load; a file in the bundle that the manifest does not list is never used. Every
failure is one line naming the manifest key at fault.

Layout::

    DIR/bundle.json          the manifest (format 2)
    DIR/config               the kernel .config, if known
    DIR/domain.xml           the libvirt domain XML the guest ran with, if known
    DIR/patches/NN-name      the patches applied on top of the commit, in order
    DIR/testfile/NAME.py     the test file the case came from
    DIR/kernel/bzImage ...   with ``--portable``: the kernel, vmlinux and initrd themselves
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprolab import __version__
from reprolab.errors import UserError

FORMAT = 2
MANIFEST = "bundle.json"
CONFIG_NAME = "config"
DOMAIN_NAME = "domain.xml"
PATCH_DIR = "patches"
TESTFILE_DIR = "testfile"
CARRIED_DIR = "kernel"
#: Files a portable bundle may carry, by manifest name.
CARRIED = ("bzImage", "vmlinux", "config", "initrd")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def file_hash(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified replay bundle; paths point inside the bundle directory."""

    directory: Path
    testcase: str
    #: The kernel spec as plain data (what KernelSpec serialises to).
    kernel: Mapping[str, Any]
    #: Commit of the kernel tree, when the kernel was built from one.
    commit: str | None
    #: Patches applied on top of ``commit``, in order, and their hashes.
    patches: tuple[Path, ...]
    patch_hashes: tuple[str, ...]
    config: Path | None
    config_hash: str | None
    #: Kernel command line the guest booted with.
    cmdline: str
    domain_xml: Path | None
    image_recipe_hash: str | None
    scenario: Mapping[str, Any]
    seed: int | None
    #: Run options (attempts, until, mode, ...) as given.
    options: Mapping[str, Any] = field(default_factory=dict)
    reprolab_version: str = __version__
    created: str = ""
    domain_xml_hash: str | None = None
    #: The bundled copy of the test file, verified, and its hash.
    testfile: Path | None = None
    testfile_hash: str | None = None
    #: What the attempt booted: kernel cache key, release, origin, content hashes, build ID,
    #: and the image (recipe, key, initrd hash, host key...). See :mod:`reprolab.replay`.
    artifacts: Mapping[str, Any] = field(default_factory=dict)
    #: Files carried by a portable bundle (``bzImage``, ``vmlinux``, ``config``, ``initrd``),
    #: verified against their hashes.
    carried: Mapping[str, Path] = field(default_factory=dict)
    #: The attempt's own verdict (outcome, title, signature), once it had one.
    original: Mapping[str, Any] = field(default_factory=dict)


def write_bundle(
    directory: Path,
    *,
    testcase: str,
    kernel: Mapping[str, Any],
    cmdline: str,
    commit: str | None = None,
    patches: Sequence[Path] = (),
    config: Path | None = None,
    domain_xml: str | Path | None = None,
    image_recipe_hash: str | None = None,
    scenario: Mapping[str, Any] | None = None,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    testfile: Path | None = None,
    artifacts: Mapping[str, Any] | None = None,
    carry: Mapping[str, Path] | None = None,
) -> Bundle:
    """Write a bundle into ``directory`` (created; an existing manifest is replaced).

    ``domain_xml`` is the XML text or a file holding it; ``testfile`` the test case's file,
    copied in; ``carry`` the kernel files a portable bundle takes along (names from
    :data:`CARRIED`). Everything must be JSON-serialisable; a value that is not is a bug in
    the caller and fails here, not at replay time.
    """
    directory.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    hashes: list[str] = []
    if patches:
        patch_dir = directory / PATCH_DIR
        patch_dir.mkdir(exist_ok=True)
        for index, patch in enumerate(patches, start=1):
            if not patch.is_file():
                raise UserError(f"bundle: patch {patch} does not exist")
            name = f"{index:02d}-{patch.name}"
            shutil.copyfile(patch, patch_dir / name)
            copied.append(f"{PATCH_DIR}/{name}")
            hashes.append(file_hash(patch_dir / name))
    config_hash = None
    if config is not None:
        if not config.is_file():
            raise UserError(f"bundle: .config {config} does not exist")
        shutil.copyfile(config, directory / CONFIG_NAME)
        config_hash = file_hash(directory / CONFIG_NAME)
    if isinstance(domain_xml, Path):
        shutil.copyfile(domain_xml, directory / DOMAIN_NAME)
    elif isinstance(domain_xml, str):
        (directory / DOMAIN_NAME).write_text(domain_xml)
    testfile_rel = testfile_hash = None
    if testfile is not None:
        (directory / TESTFILE_DIR).mkdir(exist_ok=True)
        testfile_rel = f"{TESTFILE_DIR}/{testfile.name}"
        shutil.copyfile(testfile, directory / testfile_rel)
        testfile_hash = file_hash(directory / testfile_rel)
    carried: dict[str, dict[str, str]] = {}
    for name, src in (carry or {}).items():
        if name not in CARRIED:
            raise ValueError(f"bundle cannot carry {name!r}")
        (directory / CARRIED_DIR).mkdir(exist_ok=True)
        rel = f"{CARRIED_DIR}/{name}"
        shutil.copyfile(src, directory / rel)
        # The initrd holds the guest's SSH host private key: the bundle keeps it private.
        (directory / rel).chmod(0o600)
        carried[name] = {"path": rel, "sha256": file_hash(directory / rel)}
    manifest = {
        "format": FORMAT,
        "reprolab_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "testcase": testcase,
        "kernel": dict(kernel),
        "commit": commit,
        "patches": copied,
        "patch_hashes": hashes,
        "config": CONFIG_NAME if config is not None else None,
        "config_hash": config_hash,
        "cmdline": cmdline,
        "domain_xml": DOMAIN_NAME if domain_xml is not None else None,
        "domain_xml_hash": (file_hash(directory / DOMAIN_NAME)
                            if domain_xml is not None else None),
        "testfile": testfile_rel,
        "testfile_hash": testfile_hash,
        "image_recipe_hash": image_recipe_hash,
        "scenario": dict(scenario or {}),
        "seed": seed,
        "options": dict(options or {}),
        "artifacts": dict(artifacts or {}),
        "carried": carried,
        "original": {},
    }
    _write_manifest(directory, manifest)
    return load_bundle(directory)


def _write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, directory / MANIFEST)


def record_original(directory: Path, verdict: Mapping[str, Any]) -> None:
    """Add the attempt's verdict to its own bundle, so a replay (even of a copied bundle,
    away from the attempt directory) can say whether it showed the same signature."""
    path = directory / MANIFEST
    data = json.loads(path.read_text())
    data["original"] = dict(verdict)
    _write_manifest(directory, data)


class _Fields:
    """Typed access to the manifest, each failure a UserError naming the key."""

    def __init__(self, directory: Path, data: Mapping[str, Any]) -> None:
        self.directory = directory
        self.root = directory.resolve()
        self.data = data

    def fail(self, name: str, what: str) -> UserError:
        return UserError(f"bundle {self.directory}: field {name!r} {what}")

    def text(self, name: str, *, allow_empty: bool = False) -> str:
        value = self.data.get(name)
        if not isinstance(value, str) or (not value and not allow_empty):
            raise self.fail(name, "is missing" if name not in self.data
                            else "must be a non-empty string" if not allow_empty
                            else "must be a string")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, "must be a string or null")
        return value

    def mapping(self, name: str, *, required: bool = True) -> dict[str, Any]:
        if name not in self.data:
            if required:
                raise self.fail(name, "is missing")
            return {}
        value = self.data[name]
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object")
        return value

    def str_list(self, name: str) -> tuple[str, ...]:
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(name, "must be a list of strings")
        return tuple(value)

    def member(self, name: str, rel: str) -> Path:
        """``rel`` as a regular file inside the bundle, or a UserError naming ``name``."""
        if not rel or "\0" in rel or "\\" in rel:
            raise self.fail(name, f"names {rel!r}, not a relative path inside the bundle")
        if rel.startswith("/") or Path(rel).is_absolute():
            raise self.fail(name, f"names {rel!r}: absolute paths are not allowed")
        if ".." in rel.split("/") or posixpath.normpath(rel) != rel:
            raise self.fail(name, f"names {rel!r}: the path must be normalised, without '..'")
        path = self.directory / rel
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise self.fail(name, f"names {rel}, which is not in the bundle") from None
        if not real.is_relative_to(self.root):
            raise self.fail(name, f"names {rel}, a symlink leading out of the bundle")
        if not real.is_file():
            raise self.fail(name, f"names {rel}, which is not a regular file")
        return path

    def checked(self, name: str, hash_name: str, rel: str | None, expected: Any) -> Path:
        """The member ``rel`` after its sha256 matched ``expected``."""
        if rel is None:
            raise self.fail(name, "is missing")
        path = self.member(name, rel)
        if not isinstance(expected, str) or not _HASH.match(expected):
            what = "is missing" if expected is None else "must be 'sha256:<64 hex digits>'"
            raise self.fail(hash_name, f"{what} (every bundled file needs its hash)")
        if file_hash(path) != expected:
            raise self.fail(hash_name, f"does not match {rel} (edited after the run?)")
        return path

    def hashed_file(self, name: str, hash_name: str) -> tuple[Path | None, str | None]:
        rel = self.optional_text(name)
        expected = self.data.get(hash_name)
        if rel is None:
            if expected is not None:
                raise self.fail(hash_name, f"is set but {name!r} is null")
            return None, None
        return self.checked(name, hash_name, rel, expected), str(expected)


def load_bundle(directory: Path) -> Bundle:
    """Read and verify the bundle in ``directory``."""
    manifest = directory / MANIFEST
    if manifest.is_symlink():
        raise UserError(f"bundle {directory}: {MANIFEST} is a symlink; a bundle holds its "
                        "own files")
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{directory} is not a replay bundle (no {MANIFEST})") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {manifest}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{manifest} is not a JSON object")
    f = _Fields(directory, data)
    if data.get("format") != FORMAT:
        raise f.fail("format", f"is {data.get('format')!r}; this reprolab reads format {FORMAT}"
                     " (write the bundle again with this version)")

    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise f.fail("seed", "must be an integer or null")
    patches = f.str_list("patches")
    hashes = f.str_list("patch_hashes")
    if len(patches) != len(hashes):
        raise f.fail("patch_hashes", f"has {len(hashes)} entries for {len(patches)} patches")
    if len(set(patches)) != len(patches):
        raise f.fail("patches", "lists a file twice")
    patch_paths = tuple(f.checked("patches", "patch_hashes", rel, expected)
                        for rel, expected in zip(patches, hashes, strict=True))
    config, config_hash = f.hashed_file("config", "config_hash")
    domain_xml, domain_xml_hash = f.hashed_file("domain_xml", "domain_xml_hash")
    testfile, testfile_hash = f.hashed_file("testfile", "testfile_hash")
    carried: dict[str, Path] = {}
    for name, entry in f.mapping("carried", required=False).items():
        key = f"carried.{name}"
        if name not in CARRIED:
            raise f.fail(key, f"is not one of {', '.join(CARRIED)}")
        if not isinstance(entry, dict):
            raise f.fail(key, "must be an object with 'path' and 'sha256'")
        rel = entry.get("path")
        if not isinstance(rel, str):
            raise f.fail(f"{key}.path", "must be a string")
        carried[name] = f.checked(f"{key}.path", f"{key}.sha256", rel, entry.get("sha256"))
    return Bundle(
        directory=directory,
        testcase=f.text("testcase"),
        kernel=f.mapping("kernel"),
        commit=f.optional_text("commit"),
        patches=patch_paths,
        patch_hashes=hashes,
        config=config,
        config_hash=config_hash,
        cmdline=f.text("cmdline", allow_empty=True),
        domain_xml=domain_xml,
        domain_xml_hash=domain_xml_hash,
        testfile=testfile,
        testfile_hash=testfile_hash,
        image_recipe_hash=f.optional_text("image_recipe_hash"),
        scenario=f.mapping("scenario", required=False),
        seed=seed,
        options=f.mapping("options", required=False),
        artifacts=f.mapping("artifacts", required=False),
        carried=carried,
        original=f.mapping("original", required=False),
        reprolab_version=f.optional_text("reprolab_version") or "unknown",
        created=f.optional_text("created") or "",
    )
