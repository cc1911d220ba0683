"""Bad input, table-driven: each case runs a real stage entry point (``run_stage`` with the stage's
``main``, in this process: the same code path as ``python -m transferlab.<stage>``, without a
second of interpreter start-up per case) and must end with exit code 2, one line naming the bad
value, and every file already written left exactly as it was.

The fast cases check configuration (params.yaml, the command line, conf/ files). The e2e ones
break real inputs of a prepared project (truncated weights, a missing meta.json, a read-only
output folder) and run the stage command as a subprocess.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_project, run, tree_digest

WATCHED = ("data", "models", "reports", "conf", "params.yaml")
# A failing stage never reads the copy's git history; copying .git took half of each case's time.
NOT_READ = shutil.ignore_patterns(".git")


def edit(path: str, old: str, new: str):
    def apply(project: Path) -> None:
        target = project / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}"
        target.write_text(text.replace(old, new, 1))

    return apply


# (stage, arguments, file edit or None, words the one-line error must contain)
CASES = [
    (
        "finetune",
        ["regime=scratch"],
        edit("params.yaml", "  val_per_class: 50", "  val_per_clas: 50"),
        "unknown key 'data.val_per_clas' in params.yaml (allowed: image_size,",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("params.yaml", "  my_target: {root: null}", "  my_targt: {root: null}"),
        "unknown dataset 'datasets.my_targt' in params.yaml (allowed: cifar10,",
    ),
    (  # builtin uses no folder dataset: the misspelt key must still be refused, not ignored
        "finetune",
        ["regime=scratch"],
        edit("params.yaml", "  my_target: {root: null}", "  my_target: {rooot: /data}"),
        "unknown key 'datasets.my_target.rooot' in params.yaml (allowed: _target_, root,",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("params.yaml", "  promote_margin: 0.0", "  promote_margn: 0.0"),
        "unknown key 'evaluate.promote_margn'",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("params.yaml", "  quadrants: [small_similar", "  quadrant: [small_similar"),
        "unknown key 'cut_sweep.quadrant'",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("params.yaml", "  batch_size: 512", "  batch_size: [512"),
        "params.yaml is not valid YAML at line",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("params.yaml", "  truncate_freeze: {lr: 0.02,", "  truncate_freeze: {init: random, lr: 0.02,"),
        "regime.truncate_freeze.init is set in both params.yaml and conf/regime/truncate_freeze.yaml",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("conf/regime/scratch.yaml", "head_dropout: 0.0", "head_dropuot: 0.0"),
        "unknown key 'head_dropuot' in regime.scratch",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("conf/trainer/cpu.yaml", "devices: 1", "device: 1"),
        "unknown key 'device' in trainer cpu",
    ),
    (
        "finetune",
        ["regime=scratch"],
        edit("conf/model/small_resnet.yaml", "widths:", "width:"),
        "unknown key 'width' in model small_resnet",
    ),
    (
        "finetune",
        ["regime=scratch", "trainer.max_epoch=1"],
        None,
        "unknown key 'trainer.max_epoch' (allowed in trainer:",
    ),
    ("finetune", ["regime=scratch", "model.widthz=[1]"], None, "unknown key 'model.widthz' (allowed in model:"),
    ("finetune", ["regime=scratch", "quadrant=small_similar"], None, "unknown key 'quadrant'"),
    (
        "finetune",
        ["regime=scratch", "regime.finetune_all.head_epochs=abc"],
        None,
        "'regime.finetune_all.head_epochs': Value 'abc' of type 'str' could not be converted to Integer",
    ),
    ("finetune", ["regime=scratch", "regime.freeze_all.foo=1"], None, "unknown key 'foo' in regime.freeze_all"),
    ("finetune", ["regime=magic"], None, "unknown regime 'magic' (allowed: freeze_all, truncate_freeze,"),
    (
        "finetune",
        ["regime=scratch", "trainer=ddp", "trainer.cell_processes=2"],
        None,
        "trainer ddp: cell_processes=2 is not allowed (allowed: 1, since this trainer is not single-node CPU",
    ),
    (
        "finetune",
        ["regime=scratch", "trainer.cell_processes=0"],
        None,
        "trainer cpu: cell_processes=0 is not allowed (allowed: 1 or more)",
    ),
    ("finetune", [], None, "stage finetune needs regime=<name> (allowed: freeze_all,"),
    ("finetune", ["regime=scratch", "model=vit"], None, "unknown model 'vit' (allowed:"),
    ("finetune", ["regime=scratch", "experiment=imagenet"], None, "unknown experiment 'imagenet' (allowed: builtin,"),
    ("finetune", ["regime=scratch", "trainer=tpu"], None, "unknown trainer 'tpu' (allowed: cpu, ddp,"),
    ("finetune", ["regime=scratch", "seeds=[]"], None, "seeds=[] is not allowed"),
    ("finetune", ["regime=scratch", "seeds=[0,0]"], None, "a non-empty list of distinct integers >= 0"),
    ("finetune", ["regime=scratch", "seeds=[-1]"], None, "seeds=[-1] is not allowed"),
    ("finetune", ["regime=scratch", "regimes=[magic]"], None, "regimes=['magic'] is not allowed"),
    ("finetune", ["regime=scratch", "seed=-1"], None, "seed=-1 is not allowed (allowed: null or an integer >= 0)"),
    ("finetune", ["regime=scratch", "data.image_size=0"], None, "data.image_size=0 is not allowed"),
    ("finetune", ["regime=scratch", "data.image_size=100000"], None, "an integer from 1 to 512"),
    ("finetune", ["regime=scratch", "data.on_bad_image=ignore"], None, "(allowed: fail, skip)"),
    ("finetune", ["regime=scratch", "augment.copies=-1"], None, "augment.copies=-1 is not allowed"),
    ("finetune", ["regime=scratch", "augment.copies=1000"], None, "an integer from 0 to 64"),
    ("finetune", ["regime=scratch", "pretrain.source=hub"], None, "(allowed: pipeline, imagenet, file)"),
    ("finetune", ["regime=scratch", "pretrain.epochs=0"], None, "pretrain.epochs=0 is not allowed"),
    ("finetune", ["regime=scratch", "pretrain.lr=0"], None, "pretrain.lr=0.0 is not allowed (allowed: a number > 0)"),
    ("finetune", ["regime=scratch", "budgets=[0]"], None, "budgets=[0] is not allowed"),
    ("finetune", ["regime=scratch", "budgets=[600,150]"], None, "a non-empty list of distinct increasing integers"),
    (
        "finetune",
        ["regime=scratch", "tune.seed=1"],
        None,
        "tune.seed=1 is not allowed (allowed: an integer >= 0 that is not one of seeds [0, 1, 2]",
    ),
    (
        "finetune",
        ["regime=scratch", "tune.search=bayes"],
        None,
        "tune.search='bayes' is not allowed (allowed: successive_halving, grid, off)",
    ),
    ("finetune", ["regime=scratch", "compare.max_seeds=2"], None, "compare.max_seeds=2 is not allowed"),
    ("finetune", ["regime=scratch", "finetune.epochs=1000"], None, "each epoch is at least one optimizer step"),
    ("finetune", ["regime=scratch", "finetune.batch_size=0"], None, "finetune.batch_size=0 is not allowed"),
    ("finetune", ["regime=scratch", "finetune.weight_decay=-1"], None, "finetune.weight_decay=-1.0 is not allowed"),
    ("finetune", ["regime=scratch", "finetune.train_per_class=0"], None, "finetune.train_per_class=0 is not allowed"),
    ("finetune", ["regime=scratch", "regime.scratch.lr=-1"], None, "regime.scratch.lr=-1.0 is not allowed"),
    ("finetune", ["regime=scratch", "regime.freeze_all.head_dropout=1.5"], None, "regime.freeze_all.head_dropout=1.5"),
    (
        "finetune",
        ["regime=scratch", "regime.finetune_all.cache_features=true"],
        None,
        "only a frozen backbone (freeze_backbone: true) has features to cache",
    ),
    (
        "finetune",
        ["regime=scratch", "regime.truncate_freeze.cut_at=stage9"],
        None,
        "regime.truncate_freeze.cut_at='stage9' is not a stage of model small_resnet "
        "(allowed: stem, stage1, stage2, stage3)",
    ),
    ("finetune", ["regime=scratch", "cut_sweep.cut_at=[nowhere]"], None, "cut_sweep.cut_at='nowhere' is not a stage"),
    ("finetune", ["regime=scratch", "cut_sweep.quadrants=[medium]"], None, "cut_sweep.quadrants=['medium']"),
    ("size_curve", ["size_curve.per_class=[30,10]"], None, "size_curve.per_class=[30, 10] is not allowed"),
    ("size_curve", ["size_curve.per_class=[10,null,30]"], None, "size_curve.per_class=[10, None, 30] is not allowed"),
    ("size_curve", ["size_curve.per_class=[0,10]"], None, "size_curve.per_class=[0, 10] is not allowed"),
    ("size_curve", ["size_curve.quadrants=[large]"], None, "size_curve.quadrants=['large'] is not allowed"),
    ("size_curve", ["size_curve.run=maybe"], None, "size_curve.run"),
    ("finetune", ["regime=scratch", "evaluate.promote_margin=2"], None, "evaluate.promote_margin=2.0 is not allowed"),
    ("finetune", ["regime=scratch", "retrain.tolerance=-0.5"], None, "retrain.tolerance=-0.5 is not allowed"),
    ("finetune", ["regime=scratch", "evaluate.batch_size=0"], None, "evaluate.batch_size=0 is not allowed"),
    ("finetune", ["regime=scratch", "advise.max_images=0"], None, "advise.max_images=0 is not allowed"),
    ("finetune", ["regime=scratch", "model.widths=abc"], None, "'widths'"),
    ("finetune", ["regime=scratch", "notakeyvalue"], None, "cannot parse arguments"),
    ("finetune", ["regime=scratch", "~data.image_size"], None, "is not supported (use plain key=value)"),
    ("finetune", ["regime=scratch", "data.image_size=32,64"], None, "is a sweep; sweep with `dvc exp run --queue -S`"),
    ("pretrain", ["model=small_vgg"], None, "regime.truncate_freeze.cut_at='stage2' is not a stage of model small_vgg"),
    (
        "augment",
        [],
        edit(
            "conf/augment/default.yaml",
            "  - _target_: albumentations.HorizontalFlip\n    p: 0.5",
            "  - _target_: albumentations.HorizontalFlip\n    prob: 0.5",
        ),
        "HorizontalFlip has no argument 'prob' (allowed: p)",
    ),
    (
        "augment",
        [],
        edit("conf/augment/default.yaml", "albumentations.GaussNoise", "albumentations.GaussianNoize"),
        "_target_='albumentations.GaussianNoize' is not an albumentations transform",
    ),
    (
        "augment",
        [],
        edit("conf/dataset/shapes.yaml", "augment: default", "augment: fancy"),
        "unknown augment 'fancy' (allowed: default, no_flip, none)",
    ),
    (
        "download",
        [],
        edit("conf/experiment/builtin.yaml", "size: small, classes: [ellipse", "size: medium, classes: [ellipse"),
        "experiment.targets.small_similar.size='medium' is not allowed (allowed: small, large)",
    ),
    (
        "download",
        [],
        edit("conf/experiment/builtin.yaml", "classes: [circle, square,", "classes: [blob, square,"),
        "unknown classes ['blob'] for dataset shapes",
    ),
    ("download", ["data.source_train_per_class=100000000"], None, "would need"),
]


def run_stage_here(project: Path, stage: str, argv: list[str], monkeypatch) -> tuple[int | str | None, str]:
    """Run ``python -m transferlab.<stage> *argv`` in this process; (exit code, stderr)."""
    import io

    module = importlib.import_module(f"transferlab.{stage}")
    from transferlab.core.stage import run_stage

    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", [stage, *argv])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(SystemExit) as exit_:
            run_stage(stage, module.main)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return exit_.value.code, stderr.getvalue()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A project with outputs already in place (fake files: a bad value must stop before reading them)."""
    project = copy_project(tmp_path_factory.mktemp("bad") / "project")
    for folder in (
        "data/raw/source",
        "data/augmented/source",
        "models/pretrain",
        "models/finetune/scratch",
        "reports/evaluate",
    ):
        (project / folder).mkdir(parents=True, exist_ok=True)
        (project / folder / "written.txt").write_text(f"{folder} was here\n")
    return project


def test_every_params_section_has_a_bad_input_case(repo):
    """Catches: a section of params.yaml whose bad values no case here tries (a new section added without
    one, or its cases deleted): each top-level key must be named by at least one case's expected error, as
    `<section>.`, `<section>=` or `<section>'`, or as a config group (`unknown <section> `, `in <section> `).
    A longer name does not count for a prefix of it (`seeds=` is not a case for `seed`)."""
    import re

    import yaml

    def names(section: str) -> re.Pattern[str]:
        s = re.escape(section)
        return re.compile(rf"(?<![\w.]){s}(?=[.='])|(?:unknown|in) {s} ")

    sections = list(yaml.safe_load((repo / "params.yaml").read_text()))
    untried = [s for s in sections if not any(names(s).search(words) for *_, words in CASES)]
    assert not untried, f"no bad-input case for params.yaml's {untried}"


@pytest.mark.parametrize("stage,argv,change,words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    written, tmp_path, monkeypatch, stage, argv, change, words
):
    """Catches: a bad value ignored or accepted, a traceback instead of one line, an error only after work,
    and any output changed by a run that failed."""
    project = tmp_path / "project"
    shutil.copytree(written, project, symlinks=True, ignore=NOT_READ)
    if change is not None:
        change(project)
    before = tree_digest(project, WATCHED)
    code, stderr = run_stage_here(project, stage, argv, monkeypatch)
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], stderr
    assert tree_digest(project, WATCHED) == before, "a failed run changed what was already written"
    assert not (project / "mlflow.db").exists(), "no MLflow run may start on bad input"


@pytest.mark.e2e
@pytest.mark.parametrize(
    "stage,argv,damage,words",
    [
        (
            "finetune",
            ["regime=finetune_all"],
            lambda p: (p / "models/pretrain/backbone.pt").write_bytes(b"\x80\x02trunc"),
            "backbone.pt cannot be loaded",
        ),
        (
            "cut_sweep",
            [],
            lambda p: (p / "data/augmented/small_different/x_train.npy").write_bytes(b"\x93NUMPY"),
            "arrays cannot be read",
        ),
    ],
)
def test_broken_inputs_are_one_line_from_the_real_command(prepared_copy, stage, argv, damage, words):
    """Catches: tracebacks for truncated files, from the real command (its exit code and stderr)."""
    damage(prepared_copy)
    before = tree_digest(prepared_copy, ("data", "models"))
    done = run(prepared_copy, f"transferlab.{stage}", *argv, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert lines[-1].startswith("error: ") and words in lines[-1], done.stderr[-2000:]
    assert tree_digest(prepared_copy, ("data", "models")) == before


@pytest.mark.parametrize(
    "damage,words",
    [
        (lambda p: (p / "models/pretrain/meta.json").unlink(), "meta.json not found: run `dvc repro pretrain` first"),
        (lambda p: (p / "data/augmented/large_similar/meta.json").write_text("{oops"), "meta.json is not valid JSON"),
        (
            lambda p: (p / "models/pretrain/backbone.pt").unlink(),
            "backbone.pt not found: run `dvc repro pretrain` first",
        ),
    ],
)
def test_missing_or_broken_inputs_stop_before_any_work(written, tmp_path, monkeypatch, damage, words):
    """Catches: a missing or unreadable input found only after minutes of training (the pre-flight reads
    every input's card and meta file before importing torch)."""
    project = tmp_path / "project"
    shutil.copytree(written, project, symlinks=True, ignore=NOT_READ)
    for dataset in ("source", "small_similar", "small_different", "large_similar", "large_different"):
        for folder, name in (("data/raw", "card.json"), ("data/augmented", "meta.json")):
            (project / folder / dataset).mkdir(parents=True, exist_ok=True)
            (project / folder / dataset / name).write_text("{}")
    (project / "models/pretrain/meta.json").write_text("{}")
    (project / "models/pretrain/backbone.pt").write_bytes(b"weights")
    damage(project)
    code, stderr = run_stage_here(project, "finetune", ["regime=finetune_all"], monkeypatch)
    assert code == 2 and words in stderr.strip().splitlines()[-1], stderr
    assert "torch" not in stderr


def test_a_read_only_output_folder_is_one_line(written, tmp_path):
    """Catches: a permission error deep inside training (or after it) instead of at the start. The stage runs
    so that the folder's permissions apply to it (as root, without CAP_DAC_OVERRIDE: root writes anywhere)."""
    from helpers import unprivileged

    project = tmp_path / "project"
    shutil.copytree(written, project, symlinks=True, ignore=NOT_READ)
    (project / "data").chmod(0o555)
    try:
        done = subprocess.run(
            unprivileged([sys.executable, "-m", "transferlab.download"]),
            cwd=project,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        )
    finally:
        (project / "data").chmod(0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "is not writable" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]
