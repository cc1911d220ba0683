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
