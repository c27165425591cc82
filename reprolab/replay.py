"""Test cases outside pytest, and the replay bundle every attempt leaves behind.

``reprolab repro`` and the bisection oracle run a test case's attempts without a pytest
session (they need each attempt's result, one at a time, and a kernel of their own). Both
load the case the same way, here: import the test file by path, take the function and its
``reprolab`` marker as pytest would see them, and turn the marker into a :class:`CaseSpec`.
Running through ``pytest.main`` instead would hide the per-attempt results behind the
plugin's verdict and cost a collection per attempt.

The session calls :func:`write_attempt_bundle` as soon as the guest is defined, so even an
attempt that never boots says exactly what was tried; :func:`replay_plan` turns a bundle
back into the case and the kernel to run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from reprolab.bundle import Bundle, file_hash, load_bundle, record_original, write_bundle
from reprolab.case import CaseSpec
from reprolab.errors import InfraError, ReprolabError, UserError
from reprolab.kernel.spec import (
    DEBIAN_SOURCE,
    STOCK,
    BuildSpec,
    KernelSpec,
    parse_kernel_spec,
)

if TYPE_CHECKING:
    from reprolab.guest.handle import Guest
    from reprolab.image.build import GuestImage
    from reprolab.kernel.artifacts import KernelArtifacts

log = logging.getLogger(__name__)

#: Where an attempt's bundle goes, inside the attempt directory.
BUNDLE_DIR = "bundle"
MARKER = "reprolab"


# --- loading a test case ------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedCase:
    """A test function, its marker, and the :class:`CaseSpec` made from them."""

    #: ``path::function`` as given (or completed), the case's name in results.
    nodeid: str
    path: Path
    function: Callable[..., Any]
    marker: Mapping[str, Any]
    case: CaseSpec

    @property
    def base_dir(self) -> Path:
        """Relative paths in the marker's kernel spec are taken from the test's directory."""
        return self.path.parent

    def kernel_spec(self) -> KernelSpec:
        return parse_kernel_spec(self.case.kernel, base_dir=self.base_dir)

    def body(self) -> Callable[[Guest], None]:
        """The attempt body: the test function called with the booted guest.

        Only the ``guest`` fixture exists outside pytest; a case asking for others cannot
        be run this way, and says so before any guest boots.
        """
        func = self.function
        params = inspect.signature(func).parameters
        others = [name for name in params if name != "guest"]
        if others:
            raise UserError(
                f"{self.nodeid}: asks for fixture(s) {', '.join(others)}; only 'guest' is "
                "available outside pytest (use `reprolab run` for this case)"
            )
        wants_guest = "guest" in params

        def body(guest: Guest) -> None:
            if wants_guest:
                func(guest=guest)
            else:
                func()

        return body


def split_nodeid(ref: str) -> tuple[Path, str | None]:
    path_text, sep, func = ref.partition("::")
    if sep and ("::" in func or "[" in func):
        raise UserError(
            f"test case {ref!r}: classes and parametrised tests are not supported here; "
            "name a plain test function (FILE::test_name)"
        )
    return Path(path_text), (func or None)


def _import(path: Path) -> ModuleType:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"reprolab_case_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import test file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # The test's own directory first, as pytest's rootdir import mode does for helpers.
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except ReprolabError:
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UserError(f"test file {path} failed to import: {type(exc).__name__}: {exc}"
                        ) from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def _marks(obj: Any) -> list[Any]:
    marks = getattr(obj, "pytestmark", [])
    return list(marks) if isinstance(marks, list | tuple) else [marks]


def _reprolab_marker(module: ModuleType, func: Any) -> Mapping[str, Any] | None:
    """The closest ``reprolab`` mark: the function's own, else the module's ``pytestmark``."""
    for mark in [*_marks(func), *_marks(module)]:
        if getattr(mark, "name", None) == MARKER:
            if getattr(mark, "args", ()):
                raise UserError(f"{func.__name__}: the reprolab marker takes keyword "
                                "arguments only")
            return dict(mark.kwargs)
    return None


def locate_testcase(ref: str, *, search: Sequence[Path] = ()) -> Path:
    """The file ``FILE[::test_name]`` names (relative to the cwd, else to each of ``search``),
    found without importing it."""
    rel, _ = split_nodeid(ref)
    candidates = [rel, *(base / rel for base in search)] if not rel.is_absolute() else [rel]
    path = next((p.resolve() for p in candidates if p.is_file()), None)
    if path is None:
        raise UserError(f"test case file {rel} does not exist")
    return path


def load_testcase(ref: str, *, search: Sequence[Path] = (), path: Path | None = None
                  ) -> LoadedCase:
    """Load ``FILE[::test_name]`` (relative to the cwd, else to each of ``search``).

    Without ``::test_name`` the file must hold exactly one reprolab test function. ``path``
    imports that file instead of looking ``FILE`` up (a replay's verified copy).
    """
    rel, func_name = split_nodeid(ref)
    if path is None:
        path = locate_testcase(ref, search=search)
    module = _import(path)
    found: dict[str, tuple[Any, Mapping[str, Any]]] = {}
    for name, obj in vars(module).items():
        if not name.startswith("test") or not callable(obj):
            continue
        marker = _reprolab_marker(module, obj)
        if marker is not None:
            found[name] = (obj, marker)
    if func_name is None:
        if len(found) != 1:
            names = ", ".join(sorted(found)) or "none"
            raise UserError(f"{path} has {len(found)} reprolab test functions ({names}); "
                            f"name one as {rel}::test_name")
        func_name = next(iter(found))
    if func_name not in found:
        what = "is not a reprolab test case" if hasattr(module, func_name) else "does not exist"
        raise UserError(f"{path}::{func_name} {what}")
    func, marker = found[func_name]
    nodeid = f"{ref.partition('::')[0]}::{func_name}"
    return LoadedCase(nodeid, path, func, marker, CaseSpec.from_marker(nodeid, marker,
                                                                  base_dir=path.parent))


# --- kernel specs as data -----------------------------------------------------------------


def kernel_to_data(spec: KernelSpec) -> dict[str, Any]:
    """The mapping form of a spec (parse_kernel_spec reads it back), paths made absolute."""
    build = spec.build
    if build is None:
        return {"source": "stock"}
    return {
        "source": build.source,
        "commit": build.commit,
        "patches": None if build.patches is None else str(build.patches),
        "base_config": str(build.base_config),
        "fragments": [str(f) for f in build.fragments],
        "reprolab_fragments": build.reprolab_fragments,
    }


def kernel_from_data(data: Mapping[str, Any]) -> KernelSpec:
    clean = {k: v for k, v in data.items() if v is not None}
    return parse_kernel_spec(clean, base_dir=Path("/"))


def override_kernel(
    spec: KernelSpec,
    *,
    kernel: str | None = None,
    patch: Path | None = None,
    config: str | None = None,
    fragments: Sequence[Path] = (),
) -> KernelSpec:
    """The case's kernel with the command line's changes: try a fix without editing the case.

    ``kernel`` replaces the spec outright; ``patch``, ``config`` (a base config target or a
    ``.config`` file) and ``fragments`` (added after the case's own) then change the build.
    A stock kernel cannot be patched or reconfigured: that is a usage error.
    """
    if kernel is not None:
        spec = parse_kernel_spec(kernel)
    if patch is None and config is None and not fragments:
        return spec
    if spec.build is None:
        raise UserError("--patch/--config/--fragment need a built kernel; the case uses the "
                        "stock kernel (add --kernel build:linux-source-6.12 or a tree)")
    build = spec.build
    changes: dict[str, Any] = {}
    if patch is not None:
        if not patch.exists():
            raise UserError(f"--patch {patch} does not exist")
        changes["patches"] = patch.resolve()
    if config is not None:
        from reprolab.kernel.spec import CONFIG_TARGETS

        if config in CONFIG_TARGETS:
            changes["base_config"] = config
        elif Path(config).is_file():
            changes["base_config"] = Path(config).resolve()
        else:
            raise UserError(f"--config {config}: neither {', '.join(CONFIG_TARGETS)} nor a file")
    if fragments:
        missing = [f for f in fragments if not f.is_file()]
        if missing:
            raise UserError(f"--fragment {missing[0]} does not exist")
        changes["fragments"] = (*build.fragments, *(f.resolve() for f in fragments))
    return KernelSpec(build=dataclasses.replace(build, **changes))


def at_commit(spec: KernelSpec, tree: Path, commit: str) -> KernelSpec:
    """The case's kernel recipe (base config, fragments, patches) built from ``tree@commit``."""
    build = spec.build if spec.build is not None else BuildSpec(source=str(tree))
    return KernelSpec(build=dataclasses.replace(build, source=str(tree.resolve()),
                                                commit=commit))


# --- bundles ------------------------------------------------------------------------------


def _build_meta(kernel: KernelArtifacts) -> Mapping[str, Any]:
    meta = kernel.image.parent / "meta.json"
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _case_data(case: CaseSpec) -> dict[str, Any]:
    raw = json.dumps(dataclasses.asdict(case), default=str, sort_keys=True)
    data: dict[str, Any] = json.loads(raw)
    return data


def write_attempt_bundle(
    directory: Path,
    *,
    case: CaseSpec,
    kernel_spec: str | Mapping[str, Any] | KernelSpec,
    kernel: KernelArtifacts,
    image: GuestImage,
    cmdline: str,
    domain_xml: str,
    portable: bool = False,
) -> Bundle:
    """Write the attempt's bundle under ``directory/bundle``.

    The commit is the one actually built (read from the build's own record, so a tree
    built "as checked out" is pinned to its HEAD); uncommitted changes in such a tree are
    not carried and are flagged in the options. The kernel and initrd are named by cache
    key, content hash and build ID (see :mod:`reprolab.replay_cache`); ``portable`` copies
    them in as well.
    """
    from reprolab.replay_cache import artifacts_record, carry_files

    spec = kernel_spec if isinstance(kernel_spec, KernelSpec) else parse_kernel_spec(kernel_spec)
    data = kernel_to_data(spec)
    commit = spec.build.commit if spec.build is not None else None
    options: dict[str, Any] = {"cwd": os.getcwd(), "kernel_key": kernel.key,
                               "kernel_release": kernel.release}
    meta = _build_meta(kernel) if spec.build is not None else {}
    source_id = str(meta.get("source_id", ""))
    if source_id.startswith("git-"):
        commit = source_id[4:44]
        options["dirty"] = "-dirty-" in source_id
    patches: list[Path] = []
    if spec.build is not None and spec.build.patches is not None:
        from reprolab.kernel.patches import collect

        patches = [p.path for p in collect(spec.build.patches)]
    path = Path(case.name.partition("::")[0])
    testfile = None
    if path.is_file():
        testfile = path.resolve()
        options["testfile"] = str(testfile)
        options["testfile_hash"] = file_hash(testfile)
    return write_bundle(
        directory / BUNDLE_DIR,
        testcase=case.name,
        kernel=data,
        cmdline=cmdline,
        commit=commit,
        patches=patches,
        config=kernel.config if kernel.config is not None and kernel.config.is_file() else None,
        domain_xml=domain_xml,
        image_recipe_hash=f"{image.recipe}:{image.key}",
        scenario=_case_data(case),
        seed=None,
        options=options,
        testfile=testfile,
        artifacts=artifacts_record(kernel, image),
        carry=carry_files(kernel, image) if portable else None,
    )


def write_attempt_bundle_safely(directory: Path, **kwargs: Any) -> Bundle | None:
    """The session's hook: a bundle that cannot be written loses the bundle, not the attempt."""
    try:
        return write_attempt_bundle(directory, **kwargs)
    except (ReprolabError, OSError, TypeError, ValueError) as exc:
        log.warning("replay bundle for %s not written: %s", directory, exc)
        (directory / "bundle-error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        return None


def record_attempt_verdict(directory: Path, verdict: Mapping[str, Any]) -> None:
    """Put the attempt's verdict into its bundle (if it has one) for replays to compare with;
    failing to loses the comparison, never the attempt."""
    bundle = directory / BUNDLE_DIR
    if not (bundle / "bundle.json").is_file():
        return
    try:
        record_original(bundle, {k: verdict.get(k) for k in
                                 ("outcome", "title", "kind", "signature")})
    except (OSError, ValueError) as exc:
        log.warning("verdict not recorded in %s: %s", bundle, exc)


@dataclass(frozen=True)
class ReplayPlan:
    """What a bundle says to run again: the case, its kernel, and where they came from."""

    bundle: Bundle
    loaded: LoadedCase
    kernel: KernelSpec


def stage_inputs(bundle: Bundle, staging: Path) -> tuple[Path | None, Path | None]:
    """Copy the bundle's verified .config and patches to ``staging`` (a directory of the
    replay's own) and check the copies again: the build then reads exactly the manifest's
    list, in order, whatever else the bundle directory holds or comes to hold.

    Returns (config, patch series directory), each None when the bundle has none.
    """
    staging.mkdir(parents=True, exist_ok=True)
    config = None
    if bundle.config is not None:
        config = staging / "config"
        shutil.copyfile(bundle.config, config)
        if file_hash(config) != bundle.config_hash:
            raise UserError(f"bundle {bundle.directory}: field 'config_hash' does not match "
                            "config (changed while being read)")
    series = None
    if bundle.patches:
        series = staging / "patches"
        shutil.rmtree(series, ignore_errors=True)
        series.mkdir()
        names = []
        for index, (patch, expected) in enumerate(
                zip(bundle.patches, bundle.patch_hashes, strict=True), start=1):
            name = f"{index:04d}.patch"
            shutil.copyfile(patch, series / name)
            if file_hash(series / name) != expected:
                raise UserError(f"bundle {bundle.directory}: field 'patch_hashes' does not "
                                f"match {patch.name} (changed while being read)")
            names.append(name)
        (series / "series").write_text("".join(f"{n}\n" for n in names))
    return config, series


def replay_kernel(bundle: Bundle, staging: Path) -> KernelSpec:
    """The bundle's kernel, to build from the bundled copies of .config and patches.

    The bundled .config is the final one, so it becomes the base config and no fragment is
    merged on top: the replay builds exactly what ran, not what today's fragments would say.
    Only the source and commit are taken from the kernel spec: its paths (fragments, a base
    config file, patches) are the original host's and are not in the manifest's hashed list.
    """
    spec = kernel_from_data(bundle.kernel)
    if spec.build is None:
        return STOCK
    config, series = stage_inputs(bundle, staging)
    if config is None:
        raise UserError(f"bundle {bundle.directory}: field 'config' is null; a built kernel "
                        "cannot be rebuilt without its .config")
    return KernelSpec(build=dataclasses.replace(
        spec.build, commit=bundle.commit, patches=series, base_config=config, fragments=(),
        reprolab_fragments=False))


def check_rebuild_source(plan: ReplayPlan, *, trust: bool) -> None:
    """A rebuild runs the named tree's Makefiles as this user: a source outside the Debian
    packages (a tree or tarball path the bundle merely names, unhashed) needs ``--trust``."""
    build = plan.kernel.build
    if build is None or trust or DEBIAN_SOURCE.match(build.source):
        return
    raise UserError(f"bundle {plan.bundle.directory}: field 'kernel.source' names "
                    f"{build.source}, which is not in the bundle nor hashed, and the kernel "
                    "must be rebuilt from it; check it and rerun with --trust")


def _testfile(bundle: Bundle, trust: bool) -> tuple[str, Path | None, str | None]:
    """The test reference to load, the verified file to import (None: look it up), and a
    note saying where it came from.

    A test file is Python and runs on import, so only a file whose sha256 is the one the
    bundle recorded is imported: the original (when it still matches, so helpers next to it
    import too) or the bundle's own copy. Anything else needs ``--trust``.
    """
    func = bundle.testcase.partition("::")[2]
    ref = bundle.testcase
    original = bundle.options.get("testfile")
    if original is not None and not isinstance(original, str):
        raise UserError(f"bundle {bundle.directory}: field 'options.testfile' must be a string")
    if bundle.testfile is not None and bundle.testfile_hash is not None:
        if isinstance(original, str) and Path(original).is_absolute() and \
                Path(original).is_file() and file_hash(Path(original)) == bundle.testfile_hash:
            return ref, Path(original), None
        return ref, bundle.testfile.resolve(), f"imported the bundled copy {bundle.testfile}"
    if not trust:
        raise UserError(f"bundle {bundle.directory}: field 'testfile' is missing, so the test "
                        "file to import is not hashed; check it and rerun with --trust")
    if isinstance(original, str) and Path(original).is_file():
        ref = f"{original}::{func}" if func else original
    return ref, None, "imported an unhashed test file (--trust)"


def replay_plan(directory: Path, *, staging: Path, trust: bool = False) -> ReplayPlan:
    """Load a bundle (an attempt dir or its ``bundle/``) and the test case it names.

    Nothing from the bundle is imported or built before the whole manifest is verified;
    ``staging`` (the replay's own directory) receives the copies a rebuild would read.
    """
    if not (directory / "bundle.json").exists() and (directory / BUNDLE_DIR).is_dir():
        directory = directory / BUNDLE_DIR
    bundle = load_bundle(directory)
    search = [Path(str(bundle.options["cwd"]))] if bundle.options.get("cwd") else []
    ref, path, note = _testfile(bundle, trust)
    if note:
        log.warning("replay of %s: %s", directory, note)
    kernel = replay_kernel(bundle, staging)
    loaded = load_testcase(ref, search=search, path=path)
    loaded = dataclasses.replace(loaded, nodeid=bundle.testcase,
                                 case=dataclasses.replace(loaded.case, name=bundle.testcase))
    return ReplayPlan(bundle, loaded, kernel)


def check_replayed_cmdline(plan: ReplayPlan, attempt_dir: Path) -> str | None:
    """A warning when the replay booted another command line than the bundle recorded."""
    path = attempt_dir / "cmdline.txt"
    try:
        now = path.read_text().strip()
    except OSError as exc:
        raise InfraError(f"replayed attempt wrote no {path}") from exc
    if now != plan.bundle.cmdline.strip():
        return (f"command line differs from the bundle's: ran {now!r}, "
                f"bundle {plan.bundle.cmdline!r}")
    return None
