"""Replay bundles: everything needed to run an attempt again, in one directory.

A repro that cannot be rerun is an anecdote. Every run writes a bundle next to its artifacts
(``bundle.json`` plus copies of the files it names), and ``reprolab repro --bundle DIR``
rebuilds the same kernel, image and guest from it. Files are copied, not referenced: the
.config and patches of a bisection step, or a scratch domain XML, are gone by the time
someone wants the replay. Patches and the .config are checked against their recorded
hashes on load, so a bundle edited by hand fails loudly instead of replaying something else.

Layout::

    DIR/bundle.json      the manifest (format 1)
    DIR/config           the kernel .config, if known
    DIR/domain.xml       the libvirt domain XML the guest ran with, if known
    DIR/patches/NN-name  the patches applied on top of the commit, in order
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprolab import __version__
from reprolab.errors import UserError

FORMAT = 1
MANIFEST = "bundle.json"
CONFIG_NAME = "config"
DOMAIN_NAME = "domain.xml"
PATCH_DIR = "patches"


def file_hash(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class Bundle:
    """A loaded replay bundle; paths point inside the bundle directory."""

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
) -> Bundle:
    """Write a bundle into ``directory`` (created; an existing manifest is replaced).

    ``domain_xml`` is the XML text or a file holding it. Everything must be JSON-serialisable;
    a value that is not is a bug in the caller and fails here, not at replay time.
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
            hashes.append(file_hash(patch))
    config_hash = None
    if config is not None:
        if not config.is_file():
            raise UserError(f"bundle: .config {config} does not exist")
        shutil.copyfile(config, directory / CONFIG_NAME)
        config_hash = file_hash(config)
    if isinstance(domain_xml, Path):
        shutil.copyfile(domain_xml, directory / DOMAIN_NAME)
    elif isinstance(domain_xml, str):
        (directory / DOMAIN_NAME).write_text(domain_xml)
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
        "image_recipe_hash": image_recipe_hash,
        "scenario": dict(scenario or {}),
        "seed": seed,
        "options": dict(options or {}),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, directory / MANIFEST)
    return load_bundle(directory)


class _Fields:
    """Typed access to the manifest, each failure a UserError naming the field."""

    def __init__(self, directory: Path, data: Mapping[str, Any]) -> None:
        self.directory = directory
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

    def file(self, name: str) -> Path | None:
        rel = self.optional_text(name)
        if rel is None:
            return None
        path = self.directory / rel
        if not path.is_file():
            raise self.fail(name, f"names {rel}, which is not in the bundle")
        return path


def load_bundle(directory: Path) -> Bundle:
    """Read and validate the bundle in ``directory``."""
    manifest = directory / MANIFEST
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{directory} is not a replay bundle (no {MANIFEST})") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {manifest}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{manifest} is not a JSON object")
    f = _Fields(directory, data)
    if data.get("format") != FORMAT:
        raise f.fail("format", f"is {data.get('format')!r}; this reprolab reads format {FORMAT}")

    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise f.fail("seed", "must be an integer or null")
    patches = f.str_list("patches")
    hashes = f.str_list("patch_hashes")
    if len(patches) != len(hashes):
        raise f.fail("patch_hashes", f"has {len(hashes)} entries for {len(patches)} patches")
    patch_paths = []
    for rel, expected in zip(patches, hashes, strict=True):
        path = directory / rel
        if not path.is_file():
            raise f.fail("patches", f"names {rel}, which is not in the bundle")
        if file_hash(path) != expected:
            raise f.fail("patch_hashes", f"does not match {rel} (edited after the run?)")
        patch_paths.append(path)
    config = f.file("config")
    config_hash = f.optional_text("config_hash")
    if config is not None and config_hash is not None and file_hash(config) != config_hash:
        raise f.fail("config_hash", "does not match the bundled .config (edited after the run?)")
    commit = f.optional_text("commit")
    return Bundle(
        directory=directory,
        testcase=f.text("testcase"),
        kernel=f.mapping("kernel"),
        commit=commit,
        patches=tuple(patch_paths),
        patch_hashes=hashes,
        config=config,
        config_hash=config_hash,
        cmdline=f.text("cmdline", allow_empty=True),
        domain_xml=f.file("domain_xml"),
        image_recipe_hash=f.optional_text("image_recipe_hash"),
        scenario=f.mapping("scenario", required=False),
        seed=seed,
        options=f.mapping("options", required=False),
        reprolab_version=f.optional_text("reprolab_version") or "unknown",
        created=f.optional_text("created") or "",
    )
