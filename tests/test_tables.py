"""Files a user opens outside Python: CSVs that survive any class name, screenshots that go where asked."""

from __future__ import annotations

import csv
import importlib.util
import io
import subprocess

import numpy as np

from helpers import REPO

AWKWARD = ["rose, red", 'the "other" one', "plain"]


def test_class_names_with_commas_and_quotes_round_trip_through_per_class_csv():
    """Catches: per_class.csv written with f-strings, where a class folder named `rose, red` becomes two
    columns and shifts every number after it."""
    from transferlab.training.evaluation import per_class_table

    matrix = np.array([[3, 1, 0], [0, 4, 0], [1, 0, 2]])
    rows = list(csv.DictReader(io.StringIO(per_class_table(matrix, AWKWARD))))
    assert [r["class"] for r in rows] == AWKWARD
    assert [r["support"] for r in rows] == ["4", "4", "3"] and rows[0]["recall"] == "0.7500"


def test_class_names_with_commas_and_quotes_round_trip_through_the_manifest(tmp_path):
    """Catches: a manifest writer that does not quote (the manifest names every file and its label)."""
    from transferlab.datasets.prepare import MANIFEST_COLUMNS, write_manifest

    rows = [
        {"file": f"{name}/a, b.jpg", "sha256": "0" * 64, "label": name, "split": "train", "index": i, "left_out": ""}
        for i, name in enumerate(AWKWARD)
    ]
    write_manifest(tmp_path, rows)
    with open(tmp_path / "manifest.csv", newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == MANIFEST_COLUMNS
    assert sorted(r["label"] for r in read) == sorted(AWKWARD)
    assert all(r["file"].endswith("/a, b.jpg") for r in read)


def test_screenshots_go_into_any_out_folder(tmp_path, monkeypatch, capsys):
    """Catches: `tools/ui_screenshots.py --out DIR` crashing (``relative_to``) for any folder outside the
    project, after the browser had already written the screenshot."""
    spec = importlib.util.spec_from_file_location("ui_screenshots", REPO / "tools" / "ui_screenshots.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def browser(cmd, **kwargs):
        shot = next(a for a in cmd if a.startswith("--screenshot=")).split("=", 1)[1]
        with open(shot, "wb") as handle:
            handle.write(b"\x89PNG")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(tool.subprocess, "run", browser)
    out = tmp_path / "elsewhere" / "shots"
    out.mkdir(parents=True)
    tool.capture("chromium", "http://127.0.0.1:1/#/x", out / "runs.png")
    assert (out / "runs.png").read_bytes() == b"\x89PNG"
    assert str(out / "runs.png") in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    tool.capture("chromium", "http://127.0.0.1:1/#/x", tool.Path("relative.png"))
    assert (tmp_path / "relative.png").is_file()


def _reports(folder, recommended: str, val_acc: float):
    columns = "steps,quadrant,regime,role,course_note,val_acc,test_acc,lr,seeds,not_converged"
    role = {r: "recommended" if r == recommended else "tied" for r in ("freeze_all", "scratch")}
    lines = [
        columns,
        f"150,small_similar,freeze_all,{role['freeze_all']},,{val_acc},0.5,0.01,3,0",
        f"150,small_similar,scratch,{role['scratch']},,0.4,0.45,0.001,3,0",
    ]
    folder.mkdir()
    (folder / "comparison.csv").write_text("\n".join(lines) + "\n")
    (folder / "metrics.json").write_text('{"winner_acc": {"small_similar": 0.5}, "small_similar": {"freeze_all": 1}}')
    return folder


def test_compare_runs_reports_the_largest_gap_and_fails_on_another_recommendation(tmp_path):
    """Catches: the reproducibility check of two clones (tools/compare_runs.py) missing a moved number
    or calling two runs the same when their recommended regimes differ."""
    a = _reports(tmp_path / "a", "freeze_all", 0.6)
    same = subprocess.run(
        ["python", "tools/compare_runs.py", str(a), str(_reports(tmp_path / "b", "freeze_all", 0.625))],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0, same.stdout + same.stderr
    assert "| comparison.csv val_acc | 0.025 | 150/small_similar/freeze_all |" in same.stdout
    other = subprocess.run(
        ["python", "tools/compare_runs.py", str(a), str(_reports(tmp_path / "c", "scratch", 0.6))],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert other.returncode == 1 and "DIFFERENT" in other.stdout
