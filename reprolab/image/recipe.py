"""Image recipes: the YAML files under ``images/``, parsed into a frozen :class:`ImageRecipe`.

The YAML is walked as a node graph (``yaml.compose``) rather than loaded into dicts, so that
every value keeps the line it came from: a typo, a wrong type, and later an unknown package
or module found at build time are all reported as ``images/tools.yaml:12: ...``, which is
where the user has to go to fix them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import yaml

from reprolab.errors import UserError

Kind = Literal["initramfs", "disk"]
KINDS: tuple[str, ...] = ("initramfs", "disk")

#: cgroup v1 controllers the init can mount (one hierarchy each, under /sys/fs/cgroup).
CGROUP_V1_CONTROLLERS = (
    "cpu", "cpuacct", "cpuset", "memory", "blkio", "devices", "freezer", "pids",
    "perf_event", "hugetlb", "net_cls", "net_prio", "rdma", "misc",
)


@dataclass(frozen=True)
class FileSpec:
    """An extra file placed in the guest: literal content, a copied source, or a C program.

    ``compile`` exists for the nested-KVM test program: it is shipped as source and built
    statically at image build, so the guest needs no compiler and no libc of its own.
    """

    path: str
    content: str | None = None
    source: Path | None = None
    compile: Path | None = None
    mode: int = 0o644


@dataclass(frozen=True)
class DiskSpec:
    """Parameters only a disk image has."""

    size: str = "2G"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class ImageRecipe:
    name: str
    kind: Kind
    #: Recipe file, for error messages and relative ``source``/``compile`` paths.
    path: Path
    packages: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    files: tuple[FileSpec, ...] = ()
    #: Shell lines run by the init after modules, sysctls and network, before the marker.
    init: tuple[str, ...] = ()
    ssh: bool = False
    cgroup_v1: tuple[str, ...] = ()
    disk: DiskSpec = field(default_factory=DiskSpec)
    #: ``"packages:stress-ng" -> line`` so build-time errors can point into the YAML.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def where(self, section: str, value: str | None = None) -> str:
        """``file:line`` of a section (or of one value in it), for error messages."""
        key = section if value is None else f"{section}:{value}"
        line = self.lines.get(key, self.lines.get(section, 0))
        return f"{_display(self.path)}:{line}" if line else _display(self.path)


def images_dir() -> Path:
    """Directory holding the shipped recipes (``REPROLAB_IMAGES`` overrides it)."""
    env = os.environ.get("REPROLAB_IMAGES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "images"


def recipe_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    return images_dir() / f"{text}.yaml"


def load_recipe(name_or_path: str | Path) -> ImageRecipe:
    """Parse and validate a recipe; a bare name means ``<images>/<name>.yaml``."""
    path = recipe_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in images_dir().glob("*.yaml"))
        raise UserError(
            f"image recipe {name_or_path!r} not found at {path} "
            f"(known: {', '.join(known) or 'none'})"
        )
    try:
        root = yaml.compose(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{_display(path)}{line}: invalid YAML: {exc.problem}") from exc
    if root is None:
        raise UserError(f"{_display(path)}: empty recipe")
    return _Parser(path).recipe(root)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _Parser:
    """Turns the composed node tree into an :class:`ImageRecipe`, checking as it goes."""

    _FIELDS = (
        "name", "kind", "packages", "modules", "sysctls", "files", "init", "ssh",
        "cgroup_v1", "disk", "description",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, int] = {}

    def fail(self, node: yaml.Node, message: str) -> UserError:
        return UserError(f"{_display(self.path)}:{node.start_mark.line + 1}: {message}")

    def mapping(
        self, node: yaml.Node, what: str, allowed: tuple[str, ...]
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, f"a key of {what}")
            if key not in allowed:
                hint = _closest(key, allowed)
                raise self.fail(
                    key_node,
                    f"unknown key {key!r} in {what}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; allowed: {', '.join(allowed)}",
                )
            if key in out:
                raise self.fail(key_node, f"duplicate key {key!r} in {what}")
            out[key] = value_node
        return out

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value, not a list or mapping")
        return str(node.value)

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node, what)
        if node.tag != "tag:yaml.org,2002:str" or not value:
            raise self.fail(node, f"{what} must be a non-empty string, got {value!r}")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.scalar(node, what)
        if node.tag != "tag:yaml.org,2002:bool":
            raise self.fail(node, f"{what} must be true or false, got {value!r}")
        return value.lower() in ("true", "yes", "on")

    def strings(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        out = []
        for item in node.value:
            value = self.string(item, f"each entry of {what}")
            self.lines[f"{what}:{value}"] = item.start_mark.line + 1
            out.append(value)
        return tuple(out)

    def recipe(self, root: yaml.Node) -> ImageRecipe:
        top = self.mapping(root, "the recipe", self._FIELDS)
        for key, node in top.items():
            self.lines[key] = node.start_mark.line + 1
        for required in ("name", "kind"):
            if required not in top:
                raise self.fail(root, f"missing required key {required!r}")
        name = self.string(top["name"], "name")
        kind = self.string(top["kind"], "kind")
        if kind not in KINDS:
            raise self.fail(top["kind"], f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if "description" in top:
            self.string(top["description"], "description")

        def opt(key: str, conv: Callable[[yaml.Node, str], object], default: object) -> object:
            return conv(top[key], key) if key in top else default

        cgroups = cast(tuple[str, ...], opt("cgroup_v1", self.strings, ()))
        for ctrl in cgroups:
            if ctrl not in CGROUP_V1_CONTROLLERS:
                raise UserError(
                    f"{_display(self.path)}:{self.lines[f'cgroup_v1:{ctrl}']}: unknown cgroup v1 "
                    f"controller {ctrl!r}; known: {', '.join(CGROUP_V1_CONTROLLERS)}"
                )
        return ImageRecipe(
            name=name,
            kind=cast(Kind, kind),
            path=self.path.resolve(),
            packages=cast(tuple[str, ...], opt("packages", self.strings, ())),
            modules=tuple(
                m.replace("-", "_")
                for m in cast(tuple[str, ...], opt("modules", self.strings, ()))
            ),
            sysctls=cast(tuple[tuple[str, str], ...], opt("sysctls", self.sysctls, ())),
            files=cast(tuple[FileSpec, ...], opt("files", self.files, ())),
            init=cast(tuple[str, ...], opt("init", self.strings, ())),
            ssh=cast(bool, opt("ssh", self.boolean, False)),
            cgroup_v1=cgroups,
            disk=cast(DiskSpec, opt("disk", self.disk, DiskSpec())),
            lines=self._module_lines(),
        )

    def _module_lines(self) -> dict[str, int]:
        # Modules are normalised to underscores; keep their lines findable under that name.
        extra = {
            k.replace("-", "_"): v for k, v in self.lines.items() if k.startswith("modules:")
        }
        return {**self.lines, **extra}

    def sysctls(self, node: yaml.Node, what: str) -> tuple[tuple[str, str], ...]:
        out = []
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of name: value")
        for key_node, value_node in node.value:
            key = self.string(key_node, f"a key of {what}")
            if "/" in key or " " in key:
                raise self.fail(key_node, f"sysctl name {key!r} must be dotted (kernel.panic)")
            out.append((key, self.scalar(value_node, f"{what}.{key}")))
            self.lines[f"{what}:{key}"] = key_node.start_mark.line + 1
        return tuple(out)

    def files(self, node: yaml.Node, what: str) -> tuple[FileSpec, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        out = []
        for item in node.value:
            spec = self.mapping(
                item, "a files entry", ("path", "content", "source", "compile", "mode")
            )
            if "path" not in spec:
                raise self.fail(item, "a files entry needs 'path'")
            dest = self.string(spec["path"], "files path")
            if not dest.startswith("/"):
                raise self.fail(spec["path"], f"files path {dest!r} must be absolute")
            sources = [k for k in ("content", "source", "compile") if k in spec]
            if len(sources) != 1:
                raise self.fail(item, "a files entry needs exactly one of content, source, compile")
            kind = sources[0]
            mode = 0o755 if kind == "compile" else 0o644
            if "mode" in spec:
                text = self.scalar(spec["mode"], "files mode")
                try:
                    mode = int(text, 8)
                except ValueError:
                    raise self.fail(
                        spec["mode"], f"mode must be octal like '0755', got {text!r}"
                    ) from None
            self.lines[f"{what}:{dest}"] = item.start_mark.line + 1
            if kind == "content":
                content = self.scalar(spec["content"], "content")
                out.append(FileSpec(path=dest, content=content, mode=mode))
                continue
            rel = self.string(spec[kind], kind)
            src = (self.path.parent / rel).resolve()
            if not src.is_file():
                raise self.fail(spec[kind], f"{kind} file {rel!r} not found next to the recipe")
            out.append(
                FileSpec(path=dest, mode=mode, **{kind: src})  # type: ignore[arg-type]
            )
        return tuple(out)

    def disk(self, node: yaml.Node, what: str) -> DiskSpec:
        spec = self.mapping(node, what, ("size", "suite", "mirror"))
        base = DiskSpec()
        size = self.scalar(spec["size"], "disk size") if "size" in spec else base.size
        if not size[:-1].isdigit() or size[-1] not in "MG":
            raise self.fail(spec["size"], f"disk size must look like 800M or 2G, got {size!r}")
        return DiskSpec(
            size=size,
            suite=self.string(spec["suite"], "disk suite") if "suite" in spec else base.suite,
            mirror=self.string(spec["mirror"], "disk mirror") if "mirror" in spec else base.mirror,
        )


def _closest(word: str, choices: tuple[str, ...]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None
