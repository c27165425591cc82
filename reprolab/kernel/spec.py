"""Which kernel a test case wants, as a value: the stock kernel or a build recipe.

A test case names its kernel in one short string (a marker argument, a CLI option, an ini
key) or a mapping (a marker argument). Both parse into the same frozen :class:`KernelSpec`,
so the cache key, the report and the replay bundle all see one canonical form.

String syntax::

    stock
    build:SOURCE[@COMMIT][+KEY=VALUE]...

``SOURCE`` is a Debian source package name (``linux-source-6.12``, meaning
``/usr/src/linux-source-6.12.tar.xz``), a source tarball (``.tar``, ``.tar.xz``,
``.tar.gz``, ``.tar.bz2``, ``.tar.zst``) or a kernel tree (a git work tree or a plain
directory). ``@COMMIT`` (git trees only) is any revision git understands: a hash, a tag,
``HEAD~3``. Without it a git tree is built as it is checked out, uncommitted changes
included. Keys, each after a ``+``:

``patches=PATH``
    a directory of ``*.patch``/``*.diff``/``*.mbox`` files (applied in name order), a quilt
    ``series`` file, or a single patch or mbox file.
``config=BASE``
    ``tinyconfig`` (the default), ``defconfig``, ``allnoconfig``, or a path to a
    ``.config`` (a distribution's config, say).
``fragment=PATH``
    a config fragment; repeat the key for several, applied in order.
``reprolab=no``
    leave out reprolab's own fragments (reprolab.config, reprolab-buddy.config and, on
    tinyconfig, reprolab-tiny.config). Without them the guest may not boot or be watched.

A bare ``+PATH`` is short for ``+fragment=PATH``, and blanks around ``+`` are ignored,
so ``build:linux-source-6.12 + fragments/cfs.config`` reads as one might hope. Relative
paths are taken from ``base_dir`` (the test file's directory for a marker, the current
directory otherwise). ``+`` and ``@`` therefore cannot appear in paths written this way; a
path with either can be given through the mapping form::

    {"source": ..., "commit": ..., "patches": ..., "base_config": ...,
     "fragments": [...], "reprolab_fragments": True}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprolab.errors import UserError

#: Base configs that are make targets rather than files.
CONFIG_TARGETS = ("tinyconfig", "defconfig", "allnoconfig")
DEFAULT_BASE = "tinyconfig"
DEBIAN_SOURCE = re.compile(r"^linux-source-\d+\.\d+$")
TARBALL_SUFFIXES = (".tar", ".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tar.zst")
_KEYS = ("patches", "config", "fragment", "reprolab")
_MAPPING_KEYS = frozenset(
    {"source", "commit", "patches", "base_config", "fragments", "reprolab_fragments"}
)


@dataclass(frozen=True)
class BuildSpec:
    """How to build a kernel: source, patches, base config and fragments."""

    #: A Debian tarball name (``linux-source-6.12``), a tarball path or a tree path.
    source: str
    #: A git revision, or None for the tree as it is (tarballs and plain trees: always None).
    commit: str | None = None
    #: Patch directory, quilt series file, or single patch/mbox file.
    patches: Path | None = None
    #: A make target from :data:`CONFIG_TARGETS` or a path to a ``.config``.
    base_config: str | Path = DEFAULT_BASE
    #: The user's fragments, in order, applied after reprolab's own.
    fragments: tuple[Path, ...] = ()
    #: Whether reprolab's own fragments are added (see the module doc).
    reprolab_fragments: bool = True

    def __str__(self) -> str:
        text = f"build:{self.source}"
        if self.commit:
            text += f"@{self.commit}"
        if self.patches is not None:
            text += f"+patches={self.patches}"
        if self.base_config != DEFAULT_BASE:
            text += f"+config={self.base_config}"
        for frag in self.fragments:
            text += f"+fragment={frag}"
        if not self.reprolab_fragments:
            text += "+reprolab=no"
        return text


@dataclass(frozen=True)
class KernelSpec:
    """The kernel under test: the host's stock kernel when ``build`` is None."""

    build: BuildSpec | None = None

    @property
    def is_stock(self) -> bool:
        return self.build is None

    def __str__(self) -> str:
        return "stock" if self.build is None else str(self.build)


STOCK = KernelSpec()


def parse_kernel_spec(
    text: str | Mapping[str, Any] | KernelSpec, *, base_dir: Path | None = None
) -> KernelSpec:
    """Parse the string or mapping form (see the module doc) into a :class:`KernelSpec`."""
    if isinstance(text, KernelSpec):
        return text
    base = base_dir if base_dir is not None else Path.cwd()
    if isinstance(text, Mapping):
        return _from_mapping(text, base)
    if not isinstance(text, str):
        raise UserError(f"kernel spec must be a string or a mapping, not {type(text).__name__}")
    stripped = text.strip()
    if stripped == "stock":
        return STOCK
    if not stripped.startswith("build:"):
        raise UserError(
            f"kernel spec {text!r}: expected 'stock' or 'build:SOURCE[@COMMIT][+KEY=VALUE]...'"
        )
    parts = [p.strip() for p in stripped.removeprefix("build:").split("+")]
    head, options = parts[0], parts[1:]
    if not head:
        raise UserError(f"kernel spec {text!r}: no source after 'build:'")
    source, commit = head, None
    if "@" in head:
        source, commit = (s.strip() for s in head.rsplit("@", 1))
        if not source or not commit:
            raise UserError(f"kernel spec {text!r}: empty source or commit around '@'")
    patches: str | None = None
    base_config: str = DEFAULT_BASE
    fragments: list[str] = []
    reprolab = True
    for option in options:
        if not option:
            raise UserError(f"kernel spec {text!r}: empty item after '+'")
        key, sep, value = option.partition("=")
        if not sep:
            fragments.append(option)
            continue
        key, value = key.strip(), value.strip()
        if key not in _KEYS:
            raise UserError(
                f"kernel spec {text!r}: unknown key {key!r} (known: {', '.join(_KEYS)})"
            )
        if not value:
            raise UserError(f"kernel spec {text!r}: {key}= needs a value")
        if key == "patches":
            if patches is not None:
                raise UserError(f"kernel spec {text!r}: patches= given twice")
            patches = value
        elif key == "config":
            base_config = value
        elif key == "fragment":
            fragments.append(value)
        else:
            reprolab = _parse_bool(value, f"kernel spec {text!r}: reprolab=")
    return KernelSpec(
        build=_make_build(source, commit, patches, base_config, fragments, reprolab, base)
    )


def _from_mapping(data: Mapping[str, Any], base: Path) -> KernelSpec:
    unknown = set(data) - _MAPPING_KEYS
    if unknown:
        raise UserError(
            f"kernel spec mapping: unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_MAPPING_KEYS))})"
        )
    source = data.get("source")
    if not isinstance(source, str | Path) or not str(source):
        raise UserError("kernel spec mapping: 'source' is required ('stock' or a source)")
    if str(source) == "stock":
        if len(data) > 1:
            raise UserError("kernel spec mapping: the stock kernel takes no other keys")
        return STOCK
    frags = data.get("fragments", ())
    if isinstance(frags, str | Path):
        frags = [frags]
    reprolab = data.get("reprolab_fragments", True)
    if not isinstance(reprolab, bool):
        raise UserError("kernel spec mapping: 'reprolab_fragments' must be true or false")
    commit = data.get("commit")
    patches = data.get("patches")
    return KernelSpec(
        build=_make_build(
            str(source),
            None if commit is None else str(commit),
            None if patches is None else str(patches),
            str(data.get("base_config", DEFAULT_BASE)),
            [str(f) for f in frags],
            reprolab,
            base,
        )
    )


def _make_build(
    source: str,
    commit: str | None,
    patches: str | None,
    base_config: str,
    fragments: list[str],
    reprolab: bool,
    base: Path,
) -> BuildSpec:
    if not DEBIAN_SOURCE.match(source):
        source = str(_path(source, base))
    base_cfg: str | Path = base_config if base_config in CONFIG_TARGETS else _path(
        base_config, base
    )
    if commit is not None and (DEBIAN_SOURCE.match(source) or is_tarball(source)):
        raise UserError(f"kernel spec: @{commit} needs a git tree, but {source} is a tarball")
    return BuildSpec(
        source=source,
        commit=commit,
        patches=None if patches is None else _path(patches, base),
        base_config=base_cfg,
        fragments=tuple(_path(f, base) for f in fragments),
        reprolab_fragments=reprolab,
    )


def is_tarball(source: str) -> bool:
    return source.endswith(TARBALL_SUFFIXES)


def _path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _parse_bool(value: str, what: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "y", "true", "1", "on"):
        return True
    if lowered in ("no", "n", "false", "0", "off"):
        return False
    raise UserError(f"{what}{value!r}: expected yes or no")
