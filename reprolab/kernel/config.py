"""The kernel .config: base config plus fragments, olddefconfig, then verification.

Fragments use the kernel's own format (``CONFIG_X=y``, ``# CONFIG_X is not set``), so
they work with ``scripts/kconfig/merge_config.sh`` too. Merging is done here rather than by
that script to know, for every requested option, which fragment and line asked for it:
after ``make olddefconfig`` each request is checked against the final .config, and one
that did not land is an error naming the option and the dependency that kept it out, not
the silent drop kconfig would make of it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from reprolab.errors import UserError
from reprolab.kernel import kconfig
from reprolab.kernel.spec import CONFIG_TARGETS, BuildSpec
from reprolab.proc import run

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^#\s*CONFIG_([A-Za-z0-9_]+) is not set\s*$")
#: Builtin fragments and the first kernel version each applies to.
BUDDY_SINCE = (6, 5)


@dataclass(frozen=True)
class Request:
    """One option a fragment asks for."""

    option: str  # without CONFIG_
    value: str  # "y", "m", "n" or the literal value (quotes stripped)
    origin: str  # "file:line"

    def __str__(self) -> str:
        return f"CONFIG_{self.option}={self.value}"


class ConfigError(UserError):
    """Requested options that did not make it into the final .config."""


def builtin_fragment(name: str) -> Path:
    """Path of one of reprolab's packaged fragments (``reprolab``, ``reprolab-tiny``, ...)."""
    ref = resources.files("reprolab") / "data" / "fragments" / f"{name}.config"
    path = Path(str(ref))
    if not path.is_file():
        raise UserError(f"no builtin fragment {name!r} ({path})")
    return path


def fragments_for(spec: BuildSpec, version: tuple[int, int]) -> list[Path]:
    """The fragments a build applies, in order: reprolab's own first, then the user's."""
    frags: list[Path] = []
    if spec.reprolab_fragments:
        if spec.base_config in ("tinyconfig", "allnoconfig"):
            frags.append(builtin_fragment("reprolab-tiny"))
        frags.append(builtin_fragment("reprolab"))
        if version >= BUDDY_SINCE:
            frags.append(builtin_fragment("reprolab-buddy"))
    for frag in spec.fragments:
        if not frag.is_file():
            raise UserError(f"config fragment {frag} does not exist")
        frags.append(frag)
    return frags


def check_inputs(spec: BuildSpec) -> None:
    """Parse the user's fragments and base .config now, before any source is located,
    extracted or configured: a garbage line costs a second, not the 46 s of extraction and
    ``make tinyconfig`` after which :func:`merge` would find it."""
    if isinstance(spec.base_config, Path):
        if not spec.base_config.is_file():
            raise UserError(f"base config {spec.base_config} does not exist")
        parse_fragment(spec.base_config)
    elif spec.base_config not in CONFIG_TARGETS:
        raise UserError(f"unknown base config {spec.base_config!r} ({', '.join(CONFIG_TARGETS)})")
    for frag in spec.fragments:
        if not frag.is_file():
            raise UserError(f"config fragment {frag} does not exist")
        parse_fragment(frag)


def input_hash(spec: BuildSpec, fragments: Sequence[Path]) -> str:
    """Hash of everything that decides the .config apart from the source and the compiler."""
    h = hashlib.sha256()
    if isinstance(spec.base_config, Path):
        if not spec.base_config.is_file():
            raise UserError(f"base config {spec.base_config} does not exist")
        h.update(b"file\0" + spec.base_config.read_bytes())
    else:
        h.update(f"target\0{spec.base_config}".encode())
    for frag in fragments:
        h.update(b"\0fragment\0" + frag.read_bytes())
    return h.hexdigest()[:16]


def parse_fragment(path: Path) -> list[Request]:
    """The requests of a fragment; anything else but comments and blanks is an error."""
    requests: list[Request] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config fragment: {exc}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        origin = f"{path.name}:{number}"
        set_match, unset_match = _SET.match(line), _UNSET.match(line)
        if set_match:
            requests.append(Request(set_match[1], set_match[2].strip().strip('"'), origin))
        elif unset_match:
            requests.append(Request(unset_match[1], "n", origin))
        elif line and not line.startswith("#"):
            raise UserError(f"{path}:{number}: not a config fragment line: {line!r}")
    return requests


def merge(base: Path, fragments: Sequence[Path], dest: Path) -> list[Request]:
    """Write ``base`` with every fragment's options applied in order to ``dest``.

    Returns the effective requests (a later fragment overrides an earlier one), which is
    what :func:`verify` checks.
    """
    lines = base.read_text(errors="replace").splitlines()
    wanted: dict[str, Request] = {}
    for frag in fragments:
        for request in parse_fragment(frag):
            wanted.pop(request.option, None)
            wanted[request.option] = request
    kept = []
    for line in lines:
        match = _SET.match(line) or _UNSET.match(line)
        if match and match[1] in wanted:
            continue
        kept.append(line)
    for request in wanted.values():
        kept.append(_render(request))
    dest.write_text("\n".join(kept) + "\n")
    return list(wanted.values())


def _render(request: Request) -> str:
    if request.value == "n":
        return f"# CONFIG_{request.option} is not set"
    if request.value in ("y", "m") or re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", request.value):
        return f"CONFIG_{request.option}={request.value}"
    return f'CONFIG_{request.option}="{request.value}"'


def configure(
    spec: BuildSpec,
    fragments: Sequence[Path],
    *,
    src: Path,
    obj: Path,
    make: Sequence[str],
    env: Mapping[str, str] | None = None,
    log: Path,
) -> Path:
    """Produce ``obj/.config`` from the base config and fragments, and verify it."""
    obj.mkdir(parents=True, exist_ok=True)
    config = obj / ".config"
    if isinstance(spec.base_config, Path):
        shutil.copyfile(spec.base_config, config)
        _drop_missing_key_files(config, src, log)
        run([*make, "olddefconfig"], env=env, log=log, error=UserError)
    elif spec.base_config in CONFIG_TARGETS:
        run([*make, spec.base_config], env=env, log=log, error=UserError)
    else:
        raise UserError(f"unknown base config {spec.base_config!r} ({', '.join(CONFIG_TARGETS)})")
    base = obj / ".config.base"
    shutil.copyfile(config, base)
    requests = merge(base, fragments, config)
    run([*make, "olddefconfig"], env=env, log=log, error=UserError)
    problems = verify(config, requests, kconfig.load(src))
    if problems:
        with log.open("a") as sink:
            sink.write("\nconfig verification failed:\n" + "\n".join(problems) + "\n")
        more = f" (and {len(problems) - 1} more, see {log})" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more, detail="\n".join(problems))
    return config


#: Options naming key files that a distribution's config points into its own packaging.
_KEY_FILES = ("SYSTEM_TRUSTED_KEYS", "SYSTEM_REVOCATION_KEYS")


def _drop_missing_key_files(config: Path, src: Path, log: Path) -> None:
    """Empty key-file options whose file is not in the tree.

    Debian's and Ubuntu's configs name ``debian/certs/...``, which only their packaging
    has; left as is, the build stops late with "No rule to make target". Emptying them is
    what every guide to building from a distribution config says to do.
    """
    lines = config.read_text(errors="replace").splitlines()
    changed = False
    for i, line in enumerate(lines):
        match = _SET.match(line)
        if not match or match[1] not in _KEY_FILES:
            continue
        value = match[2].strip('"')
        if value and not (src / value).exists():
            lines[i] = f'CONFIG_{match[1]}=""'
            changed = True
            with log.open("a") as sink:
                sink.write(f"reprolab: CONFIG_{match[1]}={value!r} is not in the tree, "
                           "emptied\n")
    if changed:
        config.write_text("\n".join(lines) + "\n")


def verify(config: Path, requests: Sequence[Request], index: kconfig.KconfigIndex) -> list[str]:
    """One line per request the final .config does not honour, saying why."""
    values = kconfig.read_config(config)
    problems = []
    for request in requests:
        actual = values.get(request.option, "n")
        if _same(request.value, actual):
            continue
        problems.append(
            f"{request} ({request.origin}) did not land, got {actual or 'empty'}: "
            + explain(request, values, index)
        )
    return problems


def _same(wanted: str, actual: str) -> bool:
    if wanted == actual:
        return True
    try:
        return int(wanted, 0) == int(actual, 0)
    except ValueError:
        return False


def explain(request: Request, values: Mapping[str, str], index: kconfig.KconfigIndex) -> str:
    """Why ``request`` is not what the .config says, as far as Kconfig tells."""
    name = request.option
    if not index.known(name):
        return "no such option in this kernel's Kconfig for x86 (typo, or not in this version?)"
    if request.value == "n":
        selectors = [s for s, _ in index.selected_by.get(name, []) if values.get(s, "n") != "n"]
        if selectors:
            return f"forced on by select from {', '.join('CONFIG_' + s for s in selectors)}"
        return "forced on by its default (it has no prompt to turn it off)"
    unmet: list[str] = []
    limited: list[str] = []
    for definition in index.defs[name]:
        for cond in definition.conditions:
            for part in conjuncts(cond.expr):
                got = kconfig.evaluate(part, values)
                text = f"{part} [{cond.origin}]"
                if got == 0:
                    unmet.append(text)
                elif got == 1 and request.value == "y":
                    limited.append(text)
    if unmet:
        return "unmet dependency " + "; ".join(dict.fromkeys(unmet))
    if limited:
        return "limited to m by " + "; ".join(dict.fromkeys(limited))
    defs = index.defs[name]
    if not any(d.has_prompt for d in defs):
        selectors = [s for s, _ in index.selected_by.get(name, [])]
        by = f" (selected by {', '.join(selectors[:6])})" if selectors else ""
        return f"it has no prompt, so only a select or default can set it{by}"
    if any(d.in_choice for d in defs):
        return "it is one choice of several and another was chosen"
    return "kconfig overrode it (a range, or a select of a conflicting option)"


def conjuncts(expr: str) -> list[str]:
    """Split ``expr`` at its top-level ``&&`` so each needed part can be judged alone."""
    parts: list[str] = []
    depth = 0
    current = ""
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and expr.startswith("&&", i):
            parts.append(current.strip())
            current = ""
            i += 2
            continue
        current += ch
        i += 1
    parts.append(current.strip())
    return [_unwrap(p) for p in parts if p]


def _unwrap(part: str) -> str:
    if part.startswith("(") and part.endswith(")"):
        depth = 0
        for i, ch in enumerate(part):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(part) - 1:
                return part
        return _unwrap(part[1:-1].strip())
    return part
