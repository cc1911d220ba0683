"""The comparison pipeline end to end with DVC, on tiny data (the session's ``pipeline_project``)."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import EXPERIMENT, STAGES, TINY_PARAMS, client, dvc, experiment_runs, ran, run, set_params
from transferlab.core.names import QUADRANTS, REGIMES

SEEDS = TINY_PARAMS["seeds"]


BUDGET = str(TINY_PARAMS["budgets"][-1])
TRAIN_OVER_VAL = {  # training images per validation image in the tiny data, by the target's size
    q: TINY_PARAMS[f"data.{q.split('_')[0]}_train_per_class"] / TINY_PARAMS["data.val_per_class"] for q in QUADRANTS
}
COPIES = TINY_PARAMS["augment.copies"]


def comparison_of(project):
    from transferlab.core.artifacts import Comparison

    return Comparison.load(project / "reports/evaluate/comparison.json")


def results_of(project, regime: str):
    from transferlab.core.artifacts import RegimeResults

    return RegimeResults.load(project / "models/finetune" / regime / "results.json")


@pytest.mark.e2e
def test_every_regime_is_tuned_then_run_on_every_seed_and_the_call_is_on_validation(pipeline_project):
    """Catches: a missing cell, a regime compared at a rate nobody tuned, a search that read a comparison
    seed, a leader picked by test accuracy (or by anything but mean validation accuracy), a kept network
    that is not the best-validation seed, a frozen regime whose counted cost takes each cached row K + 1 times
    (which made finetune_all "cheaper" than freeze_all and decided a tie)."""
    from transferlab.core.artifacts import RaceResults

    comparison = comparison_of(pipeline_project)
    race = RaceResults.load(pipeline_project / "models/race/results.json")
    for regime in REGIMES:
        results = results_of(pipeline_project, regime)
        assert list(results.budgets) == [BUDGET]
        for quadrant in QUADRANTS:
            found = results.at(int(BUDGET), quadrant)
            assert sorted(map(int, found.seeds)) == SEEDS, (regime, quadrant)
            for record in found.seeds.values():
                assert 0 <= record.val_acc <= 1 and record.test is not None and record.val_correct
            search = found.search
            assert search is not None and search.seed not in SEEDS, "the search must not train a compared seed"
            assert {t.lr for t in search.trials} == set(search.grid_lr) and found.lr == search.lr
            assert search.lr == max((t for t in search.trials if t.pruned_at is None), key=lambda t: t.best).lr
            assert found.cost is not None and found.cost.train_flops > 0
            if regime in ("freeze_all", "truncate_freeze"):  # features of each materialised row, once
                record = found.seeds[str(SEEDS[0])]
                n_val = len(record.val_correct or "")
                assert record.n_train == (COPIES + 1) * n_val * TRAIN_OVER_VAL[quadrant], "N x (K + 1) rows"
                once = found.cost.inference_flops * (record.n_train + n_val)
                assert abs(found.cost.train_flops / once - 1) < 0.05, (regime, quadrant, found.cost)
            best_val = max(sorted(found.seeds, key=int), key=lambda s: found.seeds[s].val_acc)
            assert found.chosen_seed == int(best_val)
            assert (pipeline_project / "models/finetune" / regime / quadrant / "model.pt").is_file()
    for quadrant in QUADRANTS:
        entry = comparison[quadrant]
        extra = race.budgets.get(BUDGET, {}).get(quadrant, {})
        means = {}
        for regime in REGIMES:
            records = {**results_of(pipeline_project, regime).at(int(BUDGET), quadrant).seeds, **extra.get(regime, {})}
            means[regime] = sum(r.val_acc for r in records.values()) / len(records)
            assert entry.regimes[regime].seeds == sorted(map(int, records))
        assert entry.verdict.leader == max(REGIMES, key=lambda r: (means[r], -REGIMES.index(r))), quadrant
        assert entry.verdict.recommended in entry.verdict.tied and entry.verdict.call in ("clear", "tie")


@pytest.mark.e2e
def test_the_race_added_seeds_only_to_tied_regimes(pipeline_project):
    """Catches: a race that trains every regime, or seeds past compare.max_seeds, in the real stage."""
    from transferlab.core.artifacts import RaceResults

    race = RaceResults.load(pipeline_project / "models/race/results.json")
    for quadrant, added in race.budgets.get(BUDGET, {}).items():
        tied_at_looks = set("+".join(race.looks[BUDGET][quadrant]).split("+"))
        assert set(added) <= tied_at_looks, quadrant
        for records in added.values():
            assert len(SEEDS) + len(records) <= TINY_PARAMS["compare.max_seeds"]


@pytest.mark.e2e
def test_the_registered_champion_is_the_recommended_regimes_best_validation_network(pipeline_project):
    """Catches: registering a regime other than the recommended one, a model other than the tested one, a
    description that does not say why, or a version that does not link back to the run that trained it."""
    import mlflow.pyfunc
    import numpy as np

    from transferlab.data.arrays import load_split

    comparison = comparison_of(pipeline_project)
    mlflow_client = client(pipeline_project)
    mlflow.set_tracking_uri(f"sqlite:///{pipeline_project / 'mlflow.db'}")
    for quadrant in QUADRANTS:
        verdict = comparison[quadrant].verdict
        name = f"{EXPERIMENT}-{quadrant}"
        champion = mlflow_client.get_model_version_by_alias(name, "champion")
        assert champion.tags["regime"] == verdict.recommended and champion.tags["seed"] == str(verdict.chosen_seed)
        evaluation = mlflow_client.get_run(champion.run_id)
        training = mlflow_client.get_run(evaluation.data.tags["training_run"])
        assert {k: training.data.tags[k] for k in ("quadrant", "regime", "seed")} == {
            "quadrant": quadrant,
            "regime": verdict.recommended,
            "seed": str(verdict.chosen_seed),
        }
        assert training.data.tags["stage"] in ("finetune", "race")
        assert verdict.reason in champion.description
        images, labels = load_split(pipeline_project / "data/raw" / quadrant, "test")
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        accuracy = float((np.asarray(model.predict(np.ascontiguousarray(images))).argmax(1) == labels).mean())
        summary = comparison[quadrant].regimes[verdict.recommended]
        tested = summary.test_acc[summary.seeds.index(verdict.chosen_seed)]
        assert accuracy == pytest.approx(tested, abs=1e-6), "the registered model is not the tested one"


@pytest.mark.e2e
def test_metrics_json_is_numbers_only_with_the_call_and_every_regimes_mean_and_std(pipeline_project):
    """Catches: strings or constants in the DVC metrics file, a missing regime, statistic, call or chosen rate."""
    metrics = json.loads((pipeline_project / "reports/metrics.json").read_text())
    comparison = comparison_of(pipeline_project)

    def leaves(node):
        return [v for value in node.values() for v in (leaves(value) if isinstance(value, dict) else [value])]

    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in leaves(metrics))
    assert list(metrics)[:3] == ["winner_acc", "winner", "clear"], "the headline first (dvc exp show)"
    for quadrant in QUADRANTS:
        verdict = comparison[quadrant].verdict
        winner = REGIMES[metrics["winner"][quadrant] - 1]
        assert winner == verdict.recommended and metrics["clear"][quadrant] == int(verdict.call == "clear")
        rival = verdict.rivals[verdict.runner_up]
        assert (metrics["diff_low"][quadrant], metrics["diff_high"][quadrant]) == (rival.low, rival.high)
        assert set(metrics["lr"][quadrant]) == set(REGIMES)
        for regime in REGIMES:
            assert set(metrics[quadrant][regime]) == {"acc", "acc_std", "macro_f1", "macro_f1_std", "val_acc"}
        assert metrics["winner_acc"][quadrant] == metrics[quadrant][winner]["acc"]


@pytest.mark.e2e
def test_report_states_the_call_for_every_quadrant(pipeline_project):
    """Catches: a report without a quadrant's recommendation, interval, tie set or the course note's rank."""
    summary = (pipeline_project / "reports/summary.md").read_text()
    comparison = comparison_of(pipeline_project)
    assert summary.startswith("# Which transfer regime should you use?")
    for quadrant in QUADRANTS:
        verdict = comparison[quadrant].verdict
        line = next(line for line in summary.splitlines() if line.startswith(f"- **{quadrant}**"))
        assert f"use `{verdict.recommended}`" in line
        assert ("course note prescribes" in line) and (verdict.call != "tie" or "tie between" in line)
        row = next(line for line in summary.splitlines() if line.startswith(f"| {quadrant} | {verdict.call} |"))
        assert ", ".join(verdict.tied) in row
    for figure in ("regime_matrix.png", "cut_sweep.png", "size_curve.png"):
        assert (pipeline_project / "reports/figures" / figure).stat().st_size > 1000


@pytest.mark.e2e
def test_the_size_curve_trains_nested_subsets_at_the_recipe_searched_nearest_in_size(pipeline_project):
    """Catches: a size curve that trains every size on the full split, reruns (or misreads) the comparison's own
    full-split runs, uses a recipe nobody searched at that size's nearest quadrant, trains a frozen regime on
    features of the wrong rows, drops the per-image validation results a paired call at each size needs, leaves
    its runs untagged in MLflow, or a report that does not show it."""
    from transferlab.core.artifacts import SizeCurveResults

    curve = SizeCurveResults.load(pipeline_project / "models/size_curve/results.json")
    quadrant = TINY_PARAMS["size_curve.quadrants"][0]
    large = TINY_PARAMS["data.large_train_per_class"]
    assert curve.run and curve.steps == int(BUDGET) and list(curve.quadrants) == [quadrant]
    for regime in REGIMES:
        points = curve.quadrants[quadrant][regime]
        assert [p.per_class for p in points] == [3, 6, large]
        assert [p.tuned_on for p in points] == ["small_different", "small_different", quadrant]
        full = results_of(pipeline_project, regime).at(int(BUDGET), quadrant)
        assert points[-1].from_comparison and {s: r.val_acc for s, r in points[-1].seeds.items()} == {
            s: r.val_acc for s, r in full.seeds.items()
        }
        searched = results_of(pipeline_project, regime).at(int(BUDGET), "small_different").search
        n_val = len(next(iter(full.seeds.values())).val_correct or "")
        assert n_val and all(len(r.val_correct or "") == n_val for p in points for r in p.seeds.values())
        for point in points[:-1]:
            assert not point.from_comparison and sorted(map(int, point.seeds)) == SEEDS
            assert searched is not None and (point.lr, point.variant) == (searched.lr, searched.variant)
            if regime in ("freeze_all", "truncate_freeze"):  # the subset's materialised rows only
                assert point.seeds[str(SEEDS[0])].n_train == (COPIES + 1) * point.n_train, regime
    runs = experiment_runs(pipeline_project, "tags.stage = 'size_curve'")
    assert sorted((r.data.tags["regime"], r.data.tags["train_per_class"], r.data.tags["seed"]) for r in runs) == sorted(
        (regime, str(n), str(seed)) for regime in REGIMES for n in (3, 6) for seed in SEEDS
    )
    assert all(r.data.params["train_per_class"] in ("3", "6") and r.info.status == "FINISHED" for r in runs)
    summary = (pipeline_project / "reports/summary.md").read_text()
    assert "## Would more labels change the answer? The data-size curve" in summary
    assert f"| {large} (all) |" in summary and f"- **{quadrant}**:" in summary


def would_run(project) -> set[str]:
    """The stages `dvc repro` would run now (`--dry` prints them without running anything)."""
    return ran(dvc(project, "repro", "--dry"))


@pytest.mark.e2e
@pytest.mark.parametrize(
    "change,expected",
    [
        ({"regime.scratch.lr": 0.0042}, {"finetune@scratch", "race", "size_curve"}),
        ({"regime.truncate_freeze.cut_at": "stage1"}, {"finetune@truncate_freeze", "race", "cut_sweep", "size_curve"}),
        ({"cut_sweep.cut_at": ["stem", "stage1"]}, {"cut_sweep"}),
        ({"evaluate.promote_margin": 0.1}, {"evaluate"}),
        ({"compare.max_seeds": 4}, {"race", "evaluate", "report"}),
        (
            {"budgets": [8]},
            {f"finetune@{r}" for r in REGIMES} | {"race", "cut_sweep", "size_curve", "evaluate", "report"},
        ),
        ({"size_curve.per_class": [2, None]}, {"size_curve", "report"}),
        ({"pretrain.lr": 0.002}, {"pretrain"}),
        ({"augment.copies": 2}, {"augment"}),
        ({"advise.max_images": 32}, {"advise"}),
        ({"advise.bank": None}, {"advise"}),
    ],
)
def test_a_params_change_reruns_exactly_the_stages_that_read_it(pipeline_copy, change, expected):
    """The stages whose own inputs changed (`dvc repro --dry`; their downstream stages run after them when
    their outputs change). Catches: a dependency that re-runs every stage (or too few) when one knob changes."""
    set_params(pipeline_copy, change)
    assert would_run(pipeline_copy) == expected


@pytest.mark.e2e
@pytest.mark.parametrize(
    "path,old,new,expected",
    [
        (
            "conf/regime/finetune_all.yaml",
            "backbone_lr_factor: 0.1",
            "backbone_lr_factor: 0.2",
            {"finetune@finetune_all", "race", "size_curve"},
        ),
        ("conf/augment/default.yaml", "p: 0.5", "p: 0.4", {"augment"}),
        ("cases/bank.csv", "\n", "\n\n", {"advise"}),
        (
            "src/transferlab/analysis/verdict.py",
            '"""The comparison',
            '"""The comparison\n',
            {"race", "evaluate", "advise", "report"},
        ),
        ("src/transferlab/data/arrays.py", '"""Prepared', '"""Prepared\n', STAGES - {"download", "report"}),
    ],
)
def test_a_file_change_reruns_the_stages_that_read_it(pipeline_copy, path, old, new, expected):
    """Catches: conf/ or code not tracked as a dependency (DVC's own Hydra support never sees conf/;
    `data/arrays.py`, which every training stage reads through, was once in no stage's deps)."""
    target = pipeline_copy / path
    target.write_text(target.read_text().replace(old, new, 1))
    assert would_run(pipeline_copy) == expected


@pytest.mark.e2e
def test_mlflow_holds_one_run_per_cell_nested_under_the_pipeline_parent(pipeline_project):
    """Catches: missing or duplicate runs, runs outside the parent, a search's trials outside its run, a parent
    without the call, metric names that differ between regimes, runs left RUNNING."""
    runs = experiment_runs(pipeline_project)
    [parent] = [r for r in runs if r.data.tags["stage"] == "pipeline" and "small_similar/test_acc" in r.data.metrics]
    cells = [r for r in runs if r.data.tags["stage"] == "finetune"]
    assert sorted((r.data.tags["quadrant"], r.data.tags["regime"], r.data.tags["seed"]) for r in cells) == sorted(
        (q, r, str(s)) for q in QUADRANTS for r in REGIMES for s in SEEDS
    )
    assert {r.info.status for r in runs} == {"FINISHED"}
    searches = {r.info.run_id: r for r in runs if r.data.tags["stage"] == "tune" and "chosen_lr" in r.data.params}
    assert sorted((r.data.tags["quadrant"], r.data.tags["regime"]) for r in searches.values()) == sorted(
        (q, r) for q in QUADRANTS for r in REGIMES
    )
    trials = [r for r in runs if r.data.tags["stage"] == "tune" and r.info.run_id not in searches]
    assert trials and {r.data.tags["mlflow.parentRunId"] for r in trials} <= set(searches)
    assert all("test/acc" not in r.data.metrics for r in trials), "a search's trial was tested"
    nested = [r for r in runs if r.data.tags["stage"] not in ("pipeline", "pretrain") and r not in trials]
    assert {r.data.tags["mlflow.parentRunId"] for r in nested} == {parent.info.run_id}
    names = {frozenset(k for k in r.data.metrics if k.startswith(("train/", "val/", "test/"))) for r in cells}
    assert len(names) == 1, "every regime must log the same metric names"
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "test/macro_f1"} <= set(next(iter(names)))
    comparison = comparison_of(pipeline_project)
    for quadrant in QUADRANTS:
        entry = comparison[quadrant]
        v = entry.verdict
        assert parent.data.tags[f"{quadrant}.recommended"] == v.recommended
        assert parent.data.tags[f"{quadrant}.call"] == v.call
        assert parent.data.metrics[f"{quadrant}/test_acc"] == pytest.approx(
            entry.regimes[v.recommended].test["acc"].mean
        )
        assert parent.data.metrics[f"{quadrant}/diff_low"] == pytest.approx(v.rivals[v.runner_up].low)
        for regime in REGIMES:
            assert float(parent.data.params[f"chosen_lr.{quadrant}.{regime}"]) == pytest.approx(
                entry.regimes[regime].lr
            )


@pytest.mark.e2e
def test_the_committed_pipeline_is_up_to_date_after_a_repro(pipeline_project, pipeline_copy):
    """Catches: outputs with run ids, timestamps or absolute paths (they would differ on a re-run).
    DVC runs in a copy (it writes under .dvc/); the files are read where the pipeline wrote them."""
    status = subprocess.run(["dvc", "status", "--json"], cwd=pipeline_copy, capture_output=True, text=True)
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    for path in (pipeline_project / "models").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".yaml"):
            text = path.read_text()
            assert str(pipeline_project) not in text, f"absolute path in {path}"
            assert "run_id" not in text, f"a run id in {path}"


@pytest.mark.e2e
def test_dvc_plots_colour_by_regime_pair_train_and_val_and_mark_chance(pipeline_copy):
    """Catches: plots labelled by file name instead of quadrant/regime, a missing train or val series,
    no chance level, or MLflow and DVC naming the same series differently."""
    done = subprocess.run(["dvc", "plots", "show", "--json"], cwd=pipeline_copy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout)["data"]
    by_file = {}
    for name, entries in shown.items():
        for entry in entries:
            by_file[name] = entry["content"]
    curves = by_file["reports/learning_curves.csv"]
    assert curves["encoding" if "encoding" in curves else "spec"]  # a Vega-Lite spec
    rows = curves["data"]["values"]
    assert {r["metric"] for r in rows} == {"train/acc", "val/acc"}, "the names MLflow uses"
    assert {(r["quadrant"], r["regime"]) for r in rows} == {(q, r) for q in QUADRANTS for r in REGIMES}
    comparison = comparison_of(pipeline_copy)
    assert all(float(r["chance"]) == pytest.approx(1 / comparison[r["quadrant"]].num_classes) for r in rows)
    assert sorted({int(r["epoch"]) for r in rows}) == list(range(1, TINY_PARAMS["finetune.epochs"] + 1))
    assert curves["spec"]["layer"][0]["encoding"]["color"]["field"] == "regime"
    sizes = by_file["reports/size_curve.csv"]["data"]["values"]
    assert {(r["regime"], r["split"]) for r in sizes} == {(r, s) for r in REGIMES for s in ("val", "test")}
    assert sorted({int(r["per_class"]) for r in sizes}) == [3, 6, TINY_PARAMS["data.large_train_per_class"]]
    bars = by_file["reports/comparison.csv"]["data"]["values"]
    assert sum(r["role"] == "recommended" for r in bars) == len(QUADRANTS)
    assert sum(r["course_note"] == "prescribed" for r in bars) == len(QUADRANTS)


@pytest.mark.e2e
def test_mlflow_runs_are_readable_few_params_epoch_steps_no_bookkeeping_series(pipeline_copy):
    """Catches: the whole config logged as params (hundreds, other quadrants' included), a knob under two
    names, metrics against the optimizer step (runs do not line up), constant or bookkeeping series,
    float32 noise, and a training run stretched by evaluation."""
    runs = experiment_runs(pipeline_copy)
    cells = [r for r in runs if r.data.tags["stage"] == "finetune"]
    mlflow_client = client(pipeline_copy)
    for cell in cells:
        params = cell.data.params
        assert len(params) <= 40, len(params)
        leaves = [k.split(".")[-1].split("/")[-1] for k in params]
        assert len(leaves) == len(set(leaves)), "a knob logged under two names"
        assert "lr" in params and not any(k.endswith(".lr") for k in params)
        metrics = set(cell.data.metrics)
        assert not metrics & {"epoch", "val/samples", "test/nll", "step"}
        assert ("phase" in metrics) == (int(params.get("head_epochs", 0)) > 0)
        history = mlflow_client.get_metric_history(cell.info.run_id, "val/acc")
        assert [m.step for m in history] == list(range(1, TINY_PARAMS["finetune.epochs"] + 1))
        assert all(len(repr(m.value)) <= 10 for m in history), [m.value for m in history]
        classes = comparison_of(pipeline_copy)[cell.data.tags["quadrant"]].num_classes
        assert cell.data.tags["val_samples"] == str(classes * TINY_PARAMS["data.val_per_class"])
    evaluations = [r for r in runs if r.data.tags["stage"] == "evaluate"]
    assert len(evaluations) == len(QUADRANTS)
    for evaluation in evaluations:
        training = mlflow_client.get_run(evaluation.data.tags["training_run"])
        assert training.info.end_time <= evaluation.info.start_time, "evaluation stretched the training run"
        [model] = mlflow_client.search_logged_models(
            [evaluation.info.experiment_id], filter_string=f"source_run_id = '{evaluation.info.run_id}'"
        )
        assert model.name == f"{evaluation.data.tags['quadrant']}-{evaluation.data.tags['regime']}"
        assert "mlflow.modelVersions" in model.tags, "the logged model links to its registered version"


@pytest.mark.e2e
def test_the_advisor_scores_every_stage_and_is_checked_against_the_measurement(pipeline_copy):
    """Catches: an advice without the numbers behind it, a pick outside the regimes, advice runs missing
    from MLflow, and a report that does not set the advice beside the measured winner."""
    summary = (pipeline_copy / "reports/summary.md").read_text()
    assert "## The advisor, checked against the measurement" in summary
    runs = {r.data.tags["quadrant"]: r for r in experiment_runs(pipeline_copy) if r.data.tags["stage"] == "advise"}
    assert set(runs) == set(QUADRANTS)
    for quadrant in QUADRANTS:
        advice = json.loads((pipeline_copy / "reports/advice" / f"{quadrant}.json").read_text())
        assert list(advice["stages"]) == ["stem", "stage1", "stage2", "stage3"]
        assert all(
            set(v) == {"logme", "logme_random", "knn", "knn_random", "probe", "probe_random", "pad"}
            for v in advice["stages"].values()
        )
        rule = advice["recommendation"]
        assert rule["regime"] in REGIMES and rule["reason"]
        assert (rule["cut_at"] is not None) == (rule["regime"] == "truncate_freeze")
        run = runs[quadrant]
        assert run.data.tags["regime"] == rule["regime"] and run.data.metrics["logme/stage3"] == pytest.approx(
            advice["stages"]["stage3"]["logme"]
        )
        assert f"| {quadrant} | {rule['regime']}" in summary
    metrics = json.loads((pipeline_copy / "reports/metrics.json").read_text())
    assert 0 <= metrics["advisor"]["hits"] <= 4


@pytest.mark.e2e
def test_cells_side_by_side_give_what_one_process_gives(pipeline_project, prepared_copy):
    """``trainer.cell_processes: 2`` (the CPU default) trains cells in this process and a worker; one
    process training them in turn, at the same torch threads per cell, must write the same results and
    networks. Catches: a result that depends on which process trained a cell or in what order (state
    shared between cells in one process, seeds drawn per process), and cells lost or trained twice."""
    import torch

    # The template's stage had this process's torch threads (OMP_NUM_THREADS is inherited) and gave each
    # of its 2 cell processes half; the threads decide the last bits, so the single process gets as many.
    per_cell = max(1, torch.get_num_threads() // 2)
    run(
        prepared_copy,
        "transferlab.finetune",
        "regime=scratch",
        "trainer.cell_processes=1",
        OMP_NUM_THREADS=str(per_cell),
    )
    one, side_by_side = prepared_copy / "models/finetune/scratch", pipeline_project / "models/finetune/scratch"
    assert json.loads((one / "results.json").read_text()) == json.loads((side_by_side / "results.json").read_text())
    for quadrant in QUADRANTS:
        assert (one / quadrant / "model.pt").read_bytes() == (side_by_side / quadrant / "model.pt").read_bytes()


@pytest.mark.e2e
def test_poisoned_test_labels_change_no_choice(pipeline_project, pipeline_copy):
    """Catches: any choice that reads the test split (the search, the kept seed, the race, the call, the
    recommendation). Every quadrant's test labels are shuffled; scratch and the race run again; every
    choice must be the template's, and only test metrics may move."""
    import numpy as np

    from transferlab.analysis.verdict import call_level, comparison
    from transferlab.core.artifacts import RaceResults

    for quadrant in QUADRANTS:
        path = pipeline_copy / "data/raw" / quadrant / "y_test.npy"
        labels = np.load(path)
        np.save(path, np.roll(labels, 1) if len(set(labels)) > 1 else labels)
    run(pipeline_copy, "transferlab.finetune", "regime=scratch")
    run(pipeline_copy, "transferlab.race")
    poisoned, clean = results_of(pipeline_copy, "scratch"), results_of(pipeline_project, "scratch")
    for quadrant in QUADRANTS:
        a, b = poisoned.at(int(BUDGET), quadrant), clean.at(int(BUDGET), quadrant)
        assert (a.lr, a.variant, a.chosen_seed, a.search) == (b.lr, b.variant, b.chosen_seed, b.search), quadrant
        assert {s: r.val_correct for s, r in a.seeds.items()} == {s: r.val_correct for s, r in b.seeds.items()}
    assert any(
        poisoned.at(int(BUDGET), q).seeds["0"].test != clean.at(int(BUDGET), q).seeds["0"].test for q in QUADRANTS
    ), "the test labels were not poisoned"
    level, at = 0.95, call_level(0.95, len(SEEDS), TINY_PARAMS["compare.max_seeds"])
    verdicts = {}
    for project in (pipeline_copy, pipeline_project):
        results = {r: results_of(project, r).budgets for r in REGIMES}
        race = RaceResults.load(project / "models/race/results.json")
        made = comparison(results, race.budgets, list(QUADRANTS), [int(BUDGET)], level, at)
        verdicts[project] = {
            q: (e.verdict.call, e.verdict.tied, e.verdict.recommended, e.verdict.chosen_seed) for q, e in made.items()
        }
    assert verdicts[pipeline_copy] == verdicts[pipeline_project]
    assert verdicts[pipeline_project] == {
        q: (e.verdict.call, e.verdict.tied, e.verdict.recommended, e.verdict.chosen_seed)
        for q, e in comparison_of(pipeline_project).items()
    }


@pytest.mark.e2e
def test_a_finished_run_becomes_cases_of_the_bank(pipeline_copy, tmp_path):
    """tools/case_bank.py on the tiny pipeline (its size curve on large_different at 3 and 6 per class).
    Catches: a case whose measured numbers are not the comparison's, a size-curve case scored on other
    images than it trained on (its probes must differ from the full split's, and a full case's must be
    the advise stage's own), a bank row that does not load, and another experiment's rows lost."""
    from transferlab.core.artifacts import Case, CaseBank, Comparison

    bank = tmp_path / "bank.csv"
    kept = Case.model_validate(
        {
            **CaseBank.load(pipeline_copy / "cases/bank.csv").cases[0].model_dump(),
            "scenario": "other",
            "case": "other/small_similar/full",
        }
    )
    CaseBank(cases=[kept]).save(bank)
    run(pipeline_copy, "python", "tools/case_bank.py", str(pipeline_copy), "--real", "different", "--bank", str(bank))
    cases = {c.case: c for c in CaseBank.load(bank).cases}
    name = TINY_PARAMS["experiment.name"]
    assert set(cases) == {
        "other/small_similar/full",
        *(f"{name}/{q}/full" for q in QUADRANTS),
        *(f"{name}/large_different/n={n}" for n in (3, 6)),
    }
    comparison = Comparison.load(pipeline_copy / "reports/evaluate/comparison.json")
    for quadrant in QUADRANTS:
        full = cases[f"{name}/{quadrant}/full"]
        verdict = comparison[quadrant].verdict
        assert full.recommended == verdict.recommended and full.tied == verdict.tied
        assert full.val == {r: s.val.mean for r, s in comparison[quadrant].regimes.items()}
        assert full.real == quadrant.endswith("different") and full.similar == quadrant.endswith("similar")
        advised = json.loads((pipeline_copy / "reports/advice" / f"{quadrant}.json").read_text())
        assert {s: v.model_dump() for s, v in full.stages.items()} == advised["stages"]
    small = cases[f"{name}/large_different/n=3"]
    assert small.images_per_class == 3 and small.recommended in small.tied
    assert small.stages != cases[f"{name}/large_different/full"].stages
