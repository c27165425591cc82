"""reprolab as a pytest plugin: options, the ``reprolab`` marker, the ``guest`` fixture.

A reprolab test function is the scenario of one attempt. The plugin calls it once per
attempt with a freshly booted guest (so ``attempts=N`` needs nothing from the author),
folds the attempts into a verdict, and turns the verdict into a pass or a failure according
to the mode: in ``regression`` mode a hit fails the test, in ``reproduce`` mode it passes.
Infrastructure failures are reported as errors of the run, never as kernel verdicts.

The plugin is loaded into every pytest run of the environment (entry point ``pytest11``), so
it stays inert until a test carries the ``reprolab`` marker: libvirt, pexpect and the run
machinery are imported only then. Labs extend it through the hooks in
:mod:`reprolab.hookspecs`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from reprolab.errors import Family, InfraError, UserError
from reprolab.paths import default_artifacts, new_run_id
from reprolab.problems import MarkerError
from reprolab.virt import DEFAULT_URI

if TYPE_CHECKING:
    from reprolab.case import CaseSpec
    from reprolab.guest.handle import Guest
    from reprolab.hosts import HostPool
    from reprolab.run.attempt import AttemptResult
    from reprolab.run.loop import CaseRun
    from reprolab.run.record import CaseResult
    from reprolab.run.session import Session

_SESSION_KEY = pytest.StashKey["Session"]()
_SESSIONS_KEY = pytest.StashKey[dict[str, "Session"]]()
_POOL_KEY = pytest.StashKey["HostPool"]()
#: How long a test waits for a free guest slot on the lab's hosts.
LEASE_TIMEOUT = 6 * 3600
_RESULT_KEY = pytest.StashKey["CaseResult"]()
#: Set by a caller (``reprolab run``) that prints the verdicts itself: one summary, not two.
CALLER_SUMMARY = pytest.StashKey[bool]()

OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("uri", {"default": DEFAULT_URI}, "libvirt URI of the host that runs the guests"),
    ("artifacts", {"default": None}, "directory for console logs, vmcores and reports "
     "(default: ./artifacts)"),
    ("kernel", {"default": None}, "kernel spec overriding every test case's kernel= "
     "(stock, build:...)"),
    ("attempts", {"default": None, "type": int}, "attempts per test case (overrides the "
     "marker)"),
    ("until", {"default": None, "choices": ["first-hit", "all"]}, "first-hit: stop at the "
     "first hit; all: run every attempt (the default; --reprolab-attempts alone runs all)"),
    ("mode", {"default": None, "choices": ["regression", "reproduce"]}, "regression: a "
     "hit fails the test; reproduce: a hit passes it"),
    ("hosts", {"default": None}, "share test cases over lab hosts: an ansible inventory or "
     "URIs separated by commas (URI;guests=N); each host runs at most its capacity"),
    ("dump", {"default": None, "choices": ["kdump-zlib", "elf"]}, "vmcore format for every "
     "case that takes one: kdump-zlib (compressed, default) or elf (raw, guest-memory sized)"),
    ("keep-guest", {"default": None, "action": "store_const", "const": "true"},
     "leave guests running after each attempt for inspection (the next run reaps them)"),
    ("portable", {"default": None, "action": "store_const", "const": "true"},
     "replay bundles carry the kernel, vmlinux and initrd (replayable on another host)"),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reprolab", "reproduce kernel faults under libvirt")
    for name, kwargs, help_text in OPTIONS:
        ini = "reprolab_" + name.replace("-", "_")
        group.addoption(f"--reprolab-{name}", dest=ini, help=f"{help_text} (ini: {ini})",
                        **kwargs)
        parser.addini(ini, help_text, default=None)


def _opt(config: pytest.Config, name: str) -> Any:
    key = "reprolab_" + name.replace("-", "_")
    value = config.getoption(key)
    if value is None:
        value = config.getini(key) or None
    return value


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from reprolab import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reprolab(expect=None, kernel='stock', guest={}, cmdline={}, mode='regression', "
        "attempts=1, until='all', boot_timeout=180, silence_timeout=None, dump='kdump-zlib', "
        "hang_budget=None): a kernel-fault reproduction run on guests under libvirt",
    )


_RUN_KEY = pytest.StashKey[str]()


def _run_id(config: pytest.Config) -> str:
    """One run id for the controller and every xdist worker, so all land in one tree."""
    if _RUN_KEY not in config.stash:
        workerinput = getattr(config, "workerinput", None)
        if workerinput and "reprolab_run_id" in workerinput:
            config.stash[_RUN_KEY] = str(workerinput["reprolab_run_id"])
        else:
            config.stash[_RUN_KEY] = os.environ.get("REPROLAB_RUN_ID") or new_run_id()
    return config.stash[_RUN_KEY]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["reprolab_run_id"] = _run_id(node.config)


def artifacts_root(config: pytest.Config) -> Path:
    """``--reprolab-artifacts`` is used as given; the default gets a directory per run."""
    given = _opt(config, "artifacts")
    if given:
        return Path(given).resolve()
    return default_artifacts() / _run_id(config)


def _session(config: pytest.Config, uri: str | None = None) -> Session:
    """The session for ``uri`` (default: ``--reprolab-uri``); one per libvirt host."""
    uri = uri or str(_opt(config, "uri") or DEFAULT_URI)
    sessions = config.stash.setdefault(_SESSIONS_KEY, {})
    if uri not in sessions:
        backend = config.hook.pytest_reprolab_backend(config=config, uri=uri)
        if backend is None:
            from reprolab.run.session import Session

            keep = str(_opt(config, "keep-guest") or "").lower() in ("1", "true", "yes")
            backend = Session(
                uri=uri,
                artifacts=artifacts_root(config),
                keep_guest=keep,
                kernel_override=_opt(config, "kernel"),
                overlap_teardown=True,
            )
        sessions[uri] = backend
        portable = str(_opt(config, "portable") or "").lower() in ("1", "true", "yes")
        sessions[uri].portable_bundles = portable
        config.stash.setdefault(_SESSION_KEY, sessions[uri])
    return sessions[uri]


def _pool(config: pytest.Config) -> HostPool | None:
    value = _opt(config, "hosts")
    if not value:
        return None
    if _POOL_KEY not in config.stash:
        from reprolab.hosts import HostPool, run_state_dir

        try:
            config.stash[_POOL_KEY] = HostPool.from_option(
                str(value), run_state_dir(_run_id(config)))
        except UserError as exc:
            raise pytest.UsageError(f"--reprolab-hosts: {exc}") from None
    return config.stash[_POOL_KEY]


def _preflight(pool: HostPool) -> None:
    """Take hosts whose libvirt does not answer out of the pool before any case starts."""
    from reprolab.virt.connection import open_connection

    for host in pool.hosts:
        try:
            open_connection(host.uri).close()
        except InfraError as exc:
            pool.mark_unhealthy(host, str(exc))


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if getattr(config, "workerinput", None) is None:
        pool = _pool(config)
        if pool is not None:
            _preflight(pool)


def pytest_unconfigure(config: pytest.Config) -> None:
    for session in config.stash.get(_SESSIONS_KEY, {}).values():
        session.close()


def case_of(item: pytest.Item) -> CaseSpec | None:
    marker = item.get_closest_marker("reprolab")
    if marker is None:
        return None
    from reprolab.case import CaseSpec

    if marker.args:
        raise UserError(f"test case {item.nodeid}: the reprolab marker takes keyword "
                        "arguments only")
    case = CaseSpec.from_marker(item.nodeid, marker.kwargs, base_dir=item.path.parent)
    config = item.config
    attempts = _opt(config, "attempts")
    return case.with_attempt_rule(
        int(attempts) if attempts else None, _opt(config, "until"),
    ).with_mode(_opt(config, "mode")).with_dump(_opt(config, "dump"))


@pytest.fixture
def guest(request: pytest.FixtureRequest) -> Guest | None:
    """The booted guest of the current attempt.

    Guests are per attempt, not per test, so the fixture only checks the marker is there;
    :func:`pytest_pyfunc_call` passes a freshly booted guest to each attempt.
    """
    if request.node.get_closest_marker("reprolab") is None:
        raise pytest.UsageError(
            f"{request.node.nodeid}: the guest fixture needs @pytest.mark.reprolab(...)"
        )
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    try:
        case = case_of(pyfuncitem)
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None
    if case is None:
        return None
    pool = _pool(pyfuncitem.config)
    if pool is None:
        session = _session(pyfuncitem.config)
        case_result = _run_case(pyfuncitem, case, session)
    else:
        session, case_result = _run_on_pool(pyfuncitem, case, pool)
    from reprolab.run.record import append_result

    pyfuncitem.stash[_RESULT_KEY] = case_result
    _record(pyfuncitem, case_result, session)
    append_result(session.artifacts, case_result, host=session.uri)
    _judge(case_result, pyfuncitem.stash.get(_BODY_ERRORS_KEY, []))
    return True


_BODY_ERRORS_KEY = pytest.StashKey[list[BaseException]]()


def _host_trouble(result: CaseResult) -> str | None:
    """The reason to take a host out of the pool: every attempt failed on the host itself."""
    if result.kernel_attempts or not result.attempts:
        return None
    failure = result.attempts[0].failure
    return failure.message if failure is not None and failure.family is Family.HOST else None


def _run_on_pool(item: pytest.Function, case: CaseSpec, pool: HostPool
                 ) -> tuple[Session, CaseResult]:
    """Run the case on a leased host; move to another host when that one is unhealthy."""
    tried: list[str] = []
    last: tuple[Session, CaseResult] | None = None
    while True:
        try:
            lease = pool.acquire(LEASE_TIMEOUT, exclude=tried)
        except InfraError as exc:
            if last is not None:
                return last  # its infra-error attempts say what each host did
            pytest.fail(f"infrastructure error, no kernel verdict: {exc}", pytrace=False)
        with lease:
            session = _session(item.config, lease.host.uri)
            item.user_properties.append(("reprolab_host", lease.host.name))
            result = _run_case(item, case, session)
            trouble = _host_trouble(result)
            if trouble is None:
                return session, result
            lease.mark_unhealthy(trouble)
            tried.append(lease.host.name)
            last = (session, result)


def _run_case(pyfuncitem: pytest.Function, case: CaseSpec, session: Session) -> CaseResult:
    from reprolab.run.loop import CaseInterrupted, run_case
    from reprolab.run.record import append_result

    func = pyfuncitem.obj
    params = inspect.signature(func).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in params if name != "guest"}

    def body(g: Guest) -> None:
        if "guest" in params:
            func(**kwargs, guest=g)
        else:
            func(**kwargs)

    try:
        session.check_expectation(case)
    except UserError as exc:
        pytest.fail(str(exc), pytrace=False)
    hook = pyfuncitem.ihook

    def finished(attempt: AttemptResult, _body_error: BaseException | None) -> None:
        hook.pytest_reprolab_attempt_finished(item=pyfuncitem, attempt=attempt)

    def crashed(attempt: AttemptResult, report: Any) -> None:
        hook.pytest_reprolab_crash_detected(item=pyfuncitem, report=report,
                                            vmcore=attempt.vmcore, attempt=attempt)

    message: str | None = None
    session.on_crash = crashed
    try:
        run = run_case(session, case, body, on_attempt=finished)
        run = _with_evidence(session, run)
    except CaseInterrupted as exc:
        # Ctrl-C: the run stops, but results.jsonl says this case was interrupted.
        append_result(session.artifacts, exc.case_result, host=session.uri, interrupted=True)
        raise
    except UserError as exc:
        message = f"{case.name}: {exc}"
    finally:
        session.on_crash = None
    if message is not None:  # outside the except: one line, no chained traceback
        pytest.fail(message, pytrace=False)
    pyfuncitem.stash[_BODY_ERRORS_KEY] = list(run.body_errors)
    return run.result


def _with_evidence(session: Any, run: CaseRun) -> CaseRun:
    """Attempts dumped while the next one ran: their files (and crash hooks) belong to this
    test, before it reports. (A backend without ``finish_evidence`` wrote them in time.)"""
    finish = getattr(session, "finish_evidence", None)
    if finish is None:
        return run
    finish()
    attempts = tuple(session.final(a) for a in run.result.attempts)
    return dataclasses.replace(run, result=dataclasses.replace(run.result, attempts=attempts))


def _record(item: pytest.Function, result: CaseResult, session: Session) -> None:
    data = result.to_json()
    for key in ("verdict", "title", "accel", "vmcore", "boot_seconds", "attempts", "hits",
                "rate", "time_to_first_hit", "artifacts"):
        item.user_properties.append((f"reprolab_{key}", data[key]))
    item.user_properties.append(("reprolab_events", ",".join(data["events"])))
    item.user_properties.append(("reprolab_signatures", ",".join(data["signatures"])))


def _infra_line(attempt: AttemptResult) -> str:
    """An infra-error attempt as the CI log will keep it: the error, where its artifacts
    are, and how its console ended (often the only clue once the artifacts are gone)."""
    line = f"{attempt.error or '?'} (artifacts: {attempt.directory}"
    ending = attempt.console_ending()
    return line + (f"; console ended: {ending})" if ending else "; console empty)")


def _judge(result: CaseResult, body_errors: list[BaseException] | None = None) -> None:
    """Pass or fail the test from its attempts.

    Regression mode fails on any kernel death or hang (the expected signature or not), then
    on the body's own failure. Reproduce mode passes on a hit, else re-raises the body's
    failure (its traceback is the most useful thing) or says what the attempts saw.
    Infrastructure errors stay errors of the run, never passes.
    """
    from reprolab.run.verdict import Outcome

    case = result.case
    verdict = result.verdict
    if verdict == "infra-error":
        errors = "; ".join(_infra_line(a) for a in result.attempts)
        pytest.fail(f"infrastructure error, no kernel verdict: {errors}", pytrace=False)
    rate = result.rate()
    where = result.attempts[0].directory.parent
    if case.mode == "regression":
        failed = result.kernel_failure
        if failed is not None:
            pytest.fail(f"regression: {failed.describe()} (attempt {failed.index}, "
                        f"rate {rate}); artifacts: {failed.directory}", pytrace=False)
        if body_errors:
            raise body_errors[0]
        return
    if result.hits:
        return
    if body_errors:
        raise body_errors[0]
    seen = "; ".join(a.describe() for a in result.kernel_attempts
                     if a.outcome is not Outcome.NOT_REPRODUCED)
    pytest.fail(
        f"not reproduced in {len(result.kernel_attempts)} attempt(s): rate {rate}, so at "
        f"most {rate.high:.0%} at 95% confidence; expected {case.expect.describe()}"
        f"{'; seen ' + seen if seen else ''}; artifacts: {where}",
        pytrace=False,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every reprolab marker before any guest boots: a typo costs no boot time.

    All bad keys of all bad markers are reported together, one line each."""
    problems: list[str] = []
    for item in items:
        try:
            case = case_of(item)
            if case is not None:
                _check_image(case)
        except MarkerError as exc:
            problems.extend(exc.problems)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise pytest.UsageError("\n".join(problems))


def _check_image(case: CaseSpec) -> None:
    """A misspelt image recipe is a usage error before any attempt directory exists."""
    from reprolab.image.recipe import load_recipe

    try:
        load_recipe(case.guest.image)
    except UserError as exc:
        raise UserError(f"{case.name}: {exc}") from None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The verdicts of every reprolab test of the run (all xdist workers included)."""
    if getattr(config, "workerinput", None) is not None:
        return
    root = artifacts_root(config)
    if not root.is_dir():  # no reprolab test ran: stay silent, import nothing
        return
    from reprolab.run.record import read_results

    rows = read_results(root)
    if not rows or config.stash.get(CALLER_SUMMARY, False):
        return
    terminalreporter.section("reprolab verdicts")
    for row in rows:
        where = f" on {row['host']}" if row.get("host") else ""
        if row.get("until") == "first-hit" and row.get("stop_rule"):
            where += f" ({row['stop_rule']})"
        terminalreporter.write_line(
            f"{row['verdict']:<15} {row['hits']}/{row['attempts']:<3} "
            f"{row['title'] or '-'}  [{row['case']}]{where}"
        )
    terminalreporter.write_line(f"artifacts: {root}")
    for each in config.stash.get(_SESSIONS_KEY, {}).values():
        for reaped in each.reaped:
            terminalreporter.write_line(f"reaped orphan domain {reaped.name} on {each.uri}: "
                                        f"{reaped.reason}")
    pool = _pool(config)
    if pool is not None:
        for line in pool.summary():
            terminalreporter.write_line(f"host {line}")
