"""The nightly CI examples under docs/ci/ stay valid YAML and keep what a nightly needs.

They cannot run here (no GitHub or GitLab runner), so the test holds them to their promises:
scheduled, bootstrap then pytest over testcases/ with one JUnit file, artifacts kept even when
the suite fails, and every repository path they name still exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "docs" / "ci"


def _load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((CI / name).read_text())
    assert isinstance(data, dict)
    return data


def _commands(text: str) -> str:
    return " ".join(text.split())


def _paths_named(text: str) -> set[str]:
    return set(re.findall(r"(?:scripts|ansible|testcases)/[\w./-]+", text))


def test_github_actions_workflow() -> None:
    wf = _load("github-actions.yml")
    triggers = wf[True]  # YAML 1.1 reads the key `on` as a boolean
    assert re.fullmatch(r"[\d*]+ [\d*]+ \* \* \*", triggers["schedule"][0]["cron"])
    job = wf["jobs"]["regression"]
    assert "self-hosted" in job["runs-on"]
    steps = job["steps"]
    runs = [_commands(step["run"]) for step in steps if "run" in step]
    assert "scripts/bootstrap.sh" in runs
    (suite,) = [r for r in runs if "pytest" in r]
    assert suite.startswith(".venv/bin/pytest testcases/")
    assert "--junitxml=reports/junit.xml" in suite
    assert "junit_family=xunit1" in suite  # record_property is dropped under xunit2
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert "artifacts/" in upload["with"]["path"]
    junit = next(s for s in steps if "junit" in s.get("uses", ""))
    assert junit["with"]["report_paths"] == "reports/junit.xml"
    for step in steps:
        if "uses" in step:
            assert re.search(r"@v\d+$", step["uses"]), step["uses"]


def test_gitlab_ci_pipeline() -> None:
    ci = _load("gitlab-ci.yml")
    assert any("schedule" in rule["if"] for rule in ci["workflow"]["rules"])
    assert ci["default"]["before_script"] == ["scripts/bootstrap.sh"]
    job = ci["regression"]
    assert job["stage"] in ci["stages"]
    (suite,) = [_commands(line) for line in job["script"] if "pytest" in line]
    assert suite.startswith(".venv/bin/pytest testcases/")
    assert "--junitxml=reports/junit.xml" in suite
    assert job["artifacts"]["when"] == "always"
    assert "artifacts/" in job["artifacts"]["paths"]
    assert job["artifacts"]["reports"]["junit"] == "reports/junit.xml"


def test_paths_the_examples_name_exist() -> None:
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        for path in _paths_named((CI / name).read_text()):
            assert (ROOT / path.rstrip("/.")).exists(), f"{name} names {path}, which is gone"
