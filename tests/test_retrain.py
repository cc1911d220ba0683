"""`make retrain` end to end against a local DVC remote (a folder) and the project's MLflow store:
nothing changed -> kept; a quadrant without a champion -> promoted; a much weaker challenger is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import EXPERIMENT, client, git_commit, project_env, ran, set_params
from transferlab.core.names import QUADRANTS


def retrain(project: Path, via_make: bool = True) -> tuple[int, str, str]:
    """`make retrain` (exit 0 unless it failed; the outcome is in reports/retrain.json), or the module
    itself, whose exit code says the outcome: 0 promoted, 10 kept."""
    cmd = ["make", "-o", ".venv/.installed", "retrain"] if via_make else [sys.executable, "-m", "transferlab.retrain"]
    done = subprocess.run(cmd, cwd=project, env=project_env(), capture_output=True, text=True)
    outcome = json.loads((project / "reports/retrain.json").read_text())["outcome"]
    code = {"promoted": 0, "kept": 10}[outcome]
    assert done.returncode == (0 if via_make else code), (
        f"retrain ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return code, (project / "reports/retrain.md").read_text(), done.stdout + done.stderr


def decisions(project: Path) -> dict[str, str]:
    return {
        q: v["decision"] for q, v in json.loads((project / "reports/retrain.json").read_text())["quadrants"].items()
    }


def champion(project: Path, quadrant: str) -> int:
    return int(client(project).get_model_version_by_alias(f"{EXPERIMENT}-{quadrant}", "champion").version)


@pytest.mark.e2e
def test_retrain_keeps_promotes_and_refuses_a_weaker_challenger(pipeline_copy, tmp_path):
    """Catches: promotion when nothing changed, no promotion for a quadrant without a champion, a weaker
    challenger promoted, and a report without the diff against the committed metrics."""
    project = pipeline_copy
    remote = tmp_path / "remote"
    subprocess.run(["dvc", "remote", "add", "-d", "local", str(remote)], cwd=project, check=True, env=project_env())
    git_commit(project, "remote")

    code, text, _ = retrain(project, via_make=False)  # identical data and params: nothing re-runs
    assert code == 10 and text.startswith("# Retraining: kept")
    assert set(decisions(project).values()) == {"unchanged (nothing re-ran)"}

    # small_similar loses its champion (as a new quadrant would have none); a change re-runs one regime.
    # (A tolerance of 0.99: whatever the tiny data gives elsewhere, no quadrant counts as regressed.)
    client(project).delete_registered_model_alias(f"{EXPERIMENT}-small_similar", "champion")
    set_params(project, {"retrain.tolerance": 0.99})
    conf = project / "conf/regime/scratch.yaml"  # another grid of rates for scratch
    conf.write_text(conf.read_text().replace("0.001", "0.002", 1))
    code, text, output = retrain(project)
    assert code == 0 and text.startswith("# Retraining: promoted")
    # size_curve reads every regime's recipe (it writes only that it is off unless size_curve.run).
    rerun = {"finetune@scratch", "race", "size_curve", "evaluate", "report"}
    assert ran(output) == rerun, "one regime's grid re-runs that regime and what reads its results"
    assert decisions(project)["small_similar"] == "promote"
    assert champion(project, "small_similar") == 2
    subprocess.run(["dvc", "push"], cwd=project, check=True, env=project_env(), capture_output=True)
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    git_commit(project, "retrained")

    # A challenger must now beat its champion by 50 points: whatever the tiny test sets say, nothing may be
    # promoted (the rule itself is tested branch by branch in test_the_decision_rule).
    before = {q: champion(project, q) for q in QUADRANTS}
    set_params(project, {"retrain.tolerance": 0.0, "evaluate.promote_margin": 0.5})
    code, text, _ = retrain(project)
    assert code == 10 and text.startswith("# Retraining: kept")
    assert {q: champion(project, q) for q in QUADRANTS} == before, "a weaker challenger must not become champion"
    assert set(decisions(project).values()) <= {"keep", "regressed", "keep (another quadrant regressed)"}
    committed = json.loads(
        subprocess.run(
            ["git", "show", "HEAD:reports/metrics.json"], cwd=project, capture_output=True, text=True, check=True
        ).stdout
    )
    diff_table = text[text.index("against the last committed") :]
    row = next(line for line in diff_table.splitlines() if line.startswith("| small_similar |"))
    assert f"{committed['winner_acc']['small_similar']:.4f}" in row.split("|")[3]


def record(version: int, acc: float, champion_acc: float | None, regime: str = "freeze_all"):
    from transferlab.core.artifacts import RegistryDecision

    return RegistryDecision(
        registered_model="m",
        version=version,
        promoted=False,
        champion_version=None,
        test_acc=acc,
        margin=0.01,
        regime=regime,
        champion_acc_same_test_set=champion_acc,
    )


@pytest.mark.parametrize(
    "records,champions,expected",
    [
        ({}, {}, ["unchanged (nothing re-ran)"] * 4),
        ({"small_similar": record(1, 0.5, None)}, {}, ["promote"] + ["unchanged (nothing re-ran)"] * 3),
        (
            {"small_similar": record(2, 0.80, 0.70)},
            {"small_similar": 1},
            ["promote"] + ["unchanged (nothing re-ran)"] * 3,
        ),
        (
            {"small_similar": record(2, 0.705, 0.70)},
            {"small_similar": 1},
            ["keep"] + ["unchanged (nothing re-ran)"] * 3,
        ),
        (
            {"small_similar": record(2, 0.80, 0.70), "large_similar": record(3, 0.60, 0.70)},
            {"small_similar": 1, "large_similar": 1},
            [
                "keep (another quadrant regressed)",
                "unchanged (nothing re-ran)",
                "regressed",
                "unchanged (nothing re-ran)",
            ],
        ),
        ({"small_similar": record(2, 0.69, 0.70)}, {"small_similar": 1}, ["keep"] + ["unchanged (nothing re-ran)"] * 3),
        (
            {"small_similar": record(4, 0.9, 0.9)},
            {"small_similar": 4},
            ["unchanged"] + ["unchanged (nothing re-ran)"] * 3,
        ),
    ],
)
def test_the_decision_rule(records, champions, expected):
    """margin 0.01, tolerance 0.02. Catches: promoting within the margin, promoting while another quadrant
    regressed, a challenger worse by less than the tolerance counted as a regression."""
    from transferlab.retrain import decide

    found = decide(records, champions, margin=0.01, tolerance=0.02)
    assert [v.decision for v in found] == expected
