"""`make retrain` end to end against a local DVC remote (a folder) and a local MLflow store:
the first run promotes, a second run on identical data keeps the champions, and a
deliberately weaker challenger is not promoted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_PARAMS, copy_project, project_env

pytestmark = pytest.mark.e2e

QUADRANTS = ("small_similar", "small_different", "large_similar", "large_different")


def retrain(project: Path, via_make: bool = True) -> tuple[int, str]:
    """`make retrain` (exit 0 unless it failed; the outcome is in reports/retrain.json), or the module
    itself, whose exit code says the outcome: 0 promoted, 10 kept."""
    cmd = ["make", "-o", ".venv/.installed", "retrain"] if via_make else [sys.executable, "-m", "transferlab.retrain"]
    done = subprocess.run(cmd, cwd=project, env=project_env(), capture_output=True, text=True)
    outcome = json.loads((project / "reports/retrain.json").read_text())["outcome"]
    code = {"promoted": 0, "kept": 10}[outcome]
    assert done.returncode == (0 if via_make else code), f"retrain ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return code, (project / "reports/retrain.md").read_text()


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=project, check=True,
                   env=project_env(), capture_output=True)


def decisions(text: str) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "(version" not in line]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows if cells[0].strip() in QUADRANTS
            and cells[2].strip().startswith(("none", "v"))}


def champion(project: Path, quadrant: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    return int(client.get_model_version_by_alias(f"transferlab-builtin-{quadrant}", "champion").version)


def committed_acc(project: Path, quadrant: str = "small_similar") -> float:
    done = subprocess.run(["git", "show", "HEAD:reports/metrics.json"], cwd=project, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)[quadrant]["acc"]


def test_retrain_promotes_then_keeps_and_refuses_a_weaker_challenger(tmp_path):
    # small_similar's champion trains its head for 20 epochs, so a challenger that cannot learn is weaker.
    project = copy_project(tmp_path / "project", {**TINY_PARAMS, "quadrants.small_similar.epochs": 20})
    remote = tmp_path / "remote"
    subprocess.run(["dvc", "remote", "add", "-d", "local", str(remote)], cwd=project, check=True, env=project_env())
    git(project, "commit", "-qam", "remote")

    code, text = retrain(project)
    assert code == 0 and text.startswith("# Retraining: promoted")
    assert {q: row[-1] for q, row in decisions(text).items()} == dict.fromkeys(QUADRANTS, "promote")
    assert all(champion(project, q) == 1 for q in QUADRANTS)
    assert f"| small_similar | {committed_acc(project):.4f} |" in text  # the diff against the committed metrics
    subprocess.run(["dvc", "push"], cwd=project, check=True, env=project_env(), capture_output=True)
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    git(project, "add", "-A")
    git(project, "commit", "-qm", "retrained")
    first = json.loads((project / "reports/eval/small_similar/registry.json").read_text())
    assert first.get("deferred") is True and first["promoted"] is False, "evaluate left the alias to retrain"

    code, text = retrain(project, via_make=False)  # identical data and params: nothing re-runs, nothing changes
    assert code == 10 and text.startswith("# Retraining: kept")
    assert {q: row[-1] for q, row in decisions(text).items()} == dict.fromkeys(QUADRANTS, "unchanged")

    params = project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.02", "lr: 1.0e-09", 1))  # small_similar's head cannot learn
    code, text = retrain(project)
    assert code == 10 and text.startswith("# Retraining: kept")
    row = decisions(text)["small_similar"]
    record = json.loads((project / "reports/eval/small_similar/registry.json").read_text())
    assert record["version"] == 2 and record["test_acc"] < record["champion_acc_same_test_set"]
    assert row[-1] in ("keep", "regressed") and row[2].startswith("v1:") and row[3].startswith("v2:")
    assert champion(project, "small_similar") == 1, "the weaker challenger must not become champion"
    before = committed_acc(project)
    diff_row = next(line for line in text.splitlines() if line.startswith("| small_similar |") and line.count("|") == 8)
    assert f"{before:.4f}" in diff_row and "-0." in diff_row
