"""Build a kernel from a :class:`BuildSpec`, once per content key, into the shared cache.

The cache key is (source id, patch hashes, config inputs hash, compiler and linker
version), all known before any file is extracted, so a hit costs a hash lookup. A file
lock per key makes parallel runs (xdist workers, two CI jobs on one runner) build once:
the second waits and then takes the first one's result.

Each build runs out of tree (``O=``). A git tree or a tarball builds in its persistent
workspace (:mod:`reprolab.kernel.workspace`: one source tree and one ``O=`` directory reused
across commits and patch series, so a bisect step after a one-commit change rebuilds only
what changed); a plain directory is copied into a private work dir deleted afterwards. What
is kept is bzImage, vmlinux (with debug info), System.map, .config, the installed modules
(``modroot/lib/modules/<release>``), the build log and ``meta.json``; the entry is filled
under a temporary name and renamed into place, so the cache never holds a half entry, and a
failed build leaves only its log (under ``build-logs/``, copied to the artifacts, named in
the error). Recompiles are cheap through ccache as well: ``CCACHE_BASEDIR`` makes paths
inside the work dir relative and the kernel's build stamps are pinned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from reprolab.errors import InfraError, UntestableError, UserError
from reprolab.kernel import config as kconfig_mod
from reprolab.kernel import patches as patch_mod
from reprolab.kernel import source as source_mod
from reprolab.kernel import workspace as workspace_mod
from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.spec import BuildSpec
from reprolab.paths import cache_root
from reprolab.proc import run

#: Bump when the layout or the way a build is made changes, to invalidate old entries.
FORMAT = "1"
Progress = Callable[[str], None]
_COMPILER_ERROR = re.compile(r"^\S+:\d+(?::\d+)?: (?:fatal )?error: ")
_ERROR_LINE = re.compile(r"(\berror:|\*\*\* .*Error \d+|undefined reference to|Error \d+\s*$)")
#: Host tools a build needs, and the Debian package that brings each.
TOOL_PACKAGES = {
    "bc": "bc", "flex": "flex", "bison": "bison", "pahole": "dwarves", "perl": "perl",
    "gelf.h": "libelf-dev", "libelf.h": "libelf-dev", "openssl/opensslv.h": "libssl-dev",
    "openssl/bio.h": "libssl-dev", "xz": "xz-utils", "zstd": "zstd", "cpio": "cpio",
}


@dataclass(frozen=True)
class BuildKey:
    """What a cached build is keyed on; ``digest`` names its cache directory."""

    source_id: str
    patches: tuple[str, ...]
    config: str
    toolchain: str
    version: tuple[int, int]

    @property
    def digest(self) -> str:
        blob = json.dumps(
            [FORMAT, self.source_id, list(self.patches), self.config, self.toolchain]
        ).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    @property
    def name(self) -> str:
        return f"build-{self.version[0]}.{self.version[1]}-{self.digest}"


def kernels_dir() -> Path:
    path = cache_root() / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def toolchain_id() -> str:
    """Compiler and linker versions: a new gcc must not reuse an old gcc's kernel."""
    parts = []
    for tool in ("gcc", "ld"):
        done = run([tool, "--version"], check=False)
        parts.append(done.stdout.splitlines()[0] if done.ok and done.stdout else f"{tool}?")
    return " | ".join(parts)


def compute_key(spec: BuildSpec) -> tuple[BuildKey, source_mod.Source,
                                          tuple[patch_mod.Patch, ...], list[Path]]:
    # Cheap checks first: fragments parsed and patches listed before the source is touched.
    kconfig_mod.check_inputs(spec)
    series = patch_mod.collect(spec.patches) if spec.patches is not None else ()
    source = source_mod.locate(spec)
    fragments = kconfig_mod.fragments_for(spec, source.version)
    key = BuildKey(
        source_id=source.source_id,
        patches=tuple(patch_mod.hashes(series)),
        config=kconfig_mod.input_hash(spec, fragments),
        toolchain=toolchain_id(),
        version=source.version,
    )
    return key, source, series, fragments


def build_kernel(
    spec: BuildSpec,
    *,
    artifacts_dir: Path | None = None,
    progress: Progress | None = None,
    bisecting: bool = False,
    jobs: int | None = None,
) -> KernelArtifacts:
    """The built kernel for ``spec``, from the cache or built now.

    ``bisecting`` turns a patch that does not apply, a config that cannot be honoured and
    a compiler error into :class:`UntestableError` (bisect exit 125): at a random commit of
    a bisection those say "this commit cannot be tested", not "fix your input".
    """
    say = progress or (lambda _msg: None)
    key, source, series, fragments = compute_key(spec)
    entry = kernels_dir() / key.name
    cached = _load(entry)
    if cached is None:
        say(f"waiting for the build lock of {key.name}")
        with FileLock(str(_locks_dir() / f"{key.name}.lock")):
            cached = _load(entry)
            if cached is None:
                try:
                    cached = _build(spec, key, source, series, fragments, entry, say, jobs)
                except UserError as exc:
                    _keep_log(build_log(key), artifacts_dir)
                    if bisecting and not isinstance(exc, UntestableError):
                        raise UntestableError(f"untestable: {exc}", detail=exc.detail) from exc
                    raise
                except BaseException:
                    _keep_log(build_log(key), artifacts_dir)
                    raise
            else:
                say(f"cache hit (built meanwhile): {entry}")
    else:
        say(f"cache hit: {entry}")
    _keep_log(entry / "build.log", artifacts_dir)
    return cached


def _locks_dir() -> Path:
    path = cache_root() / "locks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_log(key: BuildKey) -> Path:
    """Where a build writes its log; a finished build moves it into its cache entry, a
    failed one leaves it here (and the error names it)."""
    path = cache_root() / "build-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{key.name}.log"


def _load(entry: Path) -> KernelArtifacts | None:
    meta_path = entry / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    return KernelArtifacts(
        image=entry / "bzImage",
        release=str(meta["release"]),
        modules_root=entry / "modroot",
        config=entry / "config",
        vmlinux=entry / "vmlinux",
        key=entry.name,
        origin="build",
    )


def _keep_log(log: Path, artifacts_dir: Path | None) -> None:
    if artifacts_dir is not None and log.exists():
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, artifacts_dir / "build.log")


def _build(
    spec: BuildSpec,
    key: BuildKey,
    source: source_mod.Source,
    series: tuple[patch_mod.Patch, ...],
    fragments: list[Path],
    entry: Path,
    say: Progress,
    jobs: int | None,
) -> KernelArtifacts:
    if entry.exists():
        shutil.rmtree(entry)  # an entry without meta.json, from an older reprolab
    staging = entry.with_name(entry.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    log = build_log(key)
    ws = workspace_mod.for_source(source)
    started = time.monotonic()
    timings: dict[str, float] = {}
    with log.open("w") as sink:
        sink.write(f"reprolab kernel build {key.name}\nspec: {spec}\nkey: {key}\n\n")
    with contextlib.ExitStack() as stack:
        if ws is not None:
            stack.enter_context(ws.lock())
            work = ws.root
        else:
            work = entry.with_name(entry.name + ".work")
            shutil.rmtree(work, ignore_errors=True)
        src, obj = work / "src", work / "obj"
        try:
            with _stage("prepare", timings):
                if ws is not None:
                    say(f"preparing the workspace of {source.kind} source {source.location}")
                    reused = workspace_mod.checkout(ws, log=log)
                    say(f"workspace {'reused' if reused else 'created'}: {ws.root}")
                else:
                    say(f"preparing {source.kind} source {source.location}")
                    source_mod.prepare(source, src, log=log)
            if series:
                with _stage("patch", timings):
                    say(f"applying {len(series)} patch(es)")
                    patch_mod.apply(src, series, use_git=source.kind == "git", log=log)
            make = _make_argv(src, obj, work, jobs)
            env = _make_env(work)
            with _stage("config", timings):
                if ws is not None and workspace_mod.config_still_valid(ws, key.config,
                                                                       bool(series)):
                    say("configuration unchanged since the last build here: kept")
                else:
                    if ws is not None:
                        workspace_mod.forget_config(ws)
                    say(f"configuring ({spec.base_config} + {len(fragments)} fragment(s))")
                    kconfig_mod.configure(
                        spec, fragments, src=src, obj=obj, make=make, env=env, log=log
                    )
            with _stage("compile", timings), _tail(log, say):
                _make(make, env, ["bzImage", "modules", "vmlinux"], log)
            release = run([*make, "-s", "kernelrelease"],
                          env=env).stdout.strip().splitlines()[-1]
            with _stage("install", timings):
                say("installing modules")
                staging.mkdir(parents=True)
                modroot = staging / "modroot"
                _make(make, env, ["modules_install", f"INSTALL_MOD_PATH={modroot}"], log)
                moddir = modroot / "lib" / "modules" / release
                moddir.mkdir(parents=True, exist_ok=True)
                for link in ("build", "source"):  # they point into the work dir
                    (moddir / link).unlink(missing_ok=True)
                for name, dest in (("arch/x86/boot/bzImage", "bzImage"), ("vmlinux", "vmlinux"),
                                   ("System.map", "System.map"), (".config", "config")):
                    shutil.copyfile(obj / name, staging / dest)
            timings["total"] = time.monotonic() - started
            meta = {
                "spec": str(spec),
                "release": release,
                "source_id": key.source_id,
                "patches": list(key.patches),
                "config_inputs": key.config,
                "toolchain": key.toolchain,
                "fragments": [str(f) for f in fragments],
                "seconds": {k: round(v, 1) for k, v in timings.items()},
                "workspace": str(ws.root) if ws is not None else None,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            shutil.move(log, staging / "build.log")
            if ws is not None:
                workspace_mod.remember_config(ws, key.config, bool(series))
            _open_up(staging)
            staging.chmod(0o755)
            staging.rename(entry)
            say(f"built {release} in {timings['total']:.0f} s: {entry}")
        except UserError:
            # The tree's fault (compiler error, patch, config): the workspace stays usable,
            # the next build resets it.
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except BaseException:
            # Interrupted (SIGINT/SIGTERM) or the infrastructure broke: nothing half-done
            # is kept, in the cache or in the user's git tree.
            shutil.rmtree(staging, ignore_errors=True)
            if ws is not None:
                workspace_mod.drop(ws)
            raise
        finally:
            if ws is None:
                source_mod.release(source, src)
                shutil.rmtree(work, ignore_errors=True)
    loaded = _load(entry)
    assert loaded is not None
    return loaded


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - start


def _make_argv(src: Path, obj: Path, work: Path, jobs: int | None) -> list[str]:
    count = jobs or len(os.sched_getaffinity(0)) or 1
    argv = ["make", "-C", str(src), f"O={obj}", f"-j{count}"]
    if shutil.which("ccache"):
        argv += ["CC=ccache gcc", "HOSTCC=ccache gcc"]
    return argv


def _make_env(work: Path) -> dict[str, str]:
    ccache = cache_root() / "ccache"
    ccache.mkdir(parents=True, exist_ok=True)
    return {
        "CCACHE_DIR": str(ccache),
        "CCACHE_BASEDIR": str(work),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", "8G"),
        # Pinned so the same source gives the same objects (and ccache hits).
        "KBUILD_BUILD_TIMESTAMP": "reprolab",
        "KBUILD_BUILD_USER": "reprolab",
        "KBUILD_BUILD_HOST": "reprolab",
        "LC_ALL": "C",
    }


def _make(make: list[str], env: dict[str, str], targets: list[str], log: Path) -> None:
    done = run([*make, *targets], env=env, log=log, check=False)
    if done.ok:
        return
    text = log.read_text(errors="replace")
    tool = _missing_tool(text)
    if tool:
        raise InfraError(
            f"kernel build needs {tool}, which is missing "
            f"(apt-get install {TOOL_PACKAGES.get(tool, tool)}; log: {log})"
        )
    lines = text.splitlines()
    first = next((line.strip() for line in lines if _COMPILER_ERROR.match(line)), None) or next(
        (line.strip() for line in lines if _ERROR_LINE.search(line)), None
    )
    if first:
        # The work dir is gone by the time anyone reads this: name files as in the tree.
        first = first.replace(make[make.index("-C") + 1] + "/", "")
    raise UserError(
        f"kernel build failed: {first or 'make exited ' + str(done.rc)} (log: {log})",
        detail="\n".join(lines[-40:]),
    )


def _missing_tool(text: str) -> str | None:
    for line in text.splitlines():
        if "not found" not in line and "No such file" not in line:
            continue
        for tool in TOOL_PACKAGES:
            if re.search(rf"(?:^|[\s/:<]){re.escape(tool)}(?:>|: | not found|:\d+:\d+: fatal)",
                         line):
                return tool
    return None


def _open_up(entry: Path) -> None:
    """libvirt-qemu must read bzImage; everyone may read modules for image builds."""
    for root, dirs, files in os.walk(entry):
        for name in dirs:
            (Path(root) / name).chmod(0o755)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(0o644)


@contextlib.contextmanager
def _tail(log: Path, say: Progress) -> Iterator[None]:
    """Report the build log's newest line about once a second while make runs."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            try:
                with log.open("rb") as fh:
                    fh.seek(max(0, log.stat().st_size - 4096))
                    lines = fh.read().decode(errors="replace").strip().splitlines()
            except OSError:
                continue
            if lines:
                say(f"compiling: {lines[-1].strip()[:100]}")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def typical_build_seconds(default: float = 480.0) -> tuple[float, int]:
    """What a build of this machine usually takes (median of the last cached builds), and
    from how many builds; ``default`` (a fresh small 6.12 build on 2 cores) when none."""
    totals: list[tuple[float, float]] = []
    for meta in kernels_dir().glob("*/meta.json"):
        try:
            seconds = float(json.loads(meta.read_text())["seconds"]["total"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        totals.append((meta.stat().st_mtime, seconds))
    recent = sorted(s for _t, s in sorted(totals)[-5:])
    if not recent:
        return default, 0
    return recent[len(recent) // 2], len(recent)
