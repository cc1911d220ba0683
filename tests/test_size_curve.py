"""The data-size curve's logic: which sizes run, whose recipe each uses, and what the report says about
crossovers (transferlab.training.size_curve, transferlab.analysis.size_curve, the report's section)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from transferlab.analysis.size_curve import CurvePoint, best_by_size, crossovers, summary_lines
from transferlab.core.artifacts import CellRecord, SizeCurveResults, SizePoint, Stats
from transferlab.core.artifacts import TestMetrics as Metrics


def curve(values: dict[str, list[float]], sizes=(10, 30, 100, 300), std: float = 0.01) -> dict[str, list[CurvePoint]]:
    return {
        regime: [
            CurvePoint(n, Stats(mean=v, std=std, n=3), Stats(mean=v, std=std, n=3), 0.01, "", "q", False)
            for n, v in zip(sizes, series)
        ]
        for regime, series in values.items()
    }


def test_a_crossover_is_found_between_the_sizes_where_the_sign_flips():
    """Catches: a crossover placed at the wrong sizes, the wrong regime named as the one ahead, or a flip
    reported at a size where the two are only level (a level point is passed over, not a flip)."""
    found = crossovers(curve({"freeze_all": [0.6, 0.6, 0.6, 0.6], "finetune_all": [0.4, 0.6, 0.7, 0.8]}))
    assert [(c.ahead, c.behind, c.below, c.above) for c in found] == [("finetune_all", "freeze_all", 10, 100)]
    assert found[0].gap == pytest.approx(0.1) and found[0].beyond_spread
    back = crossovers(curve({"freeze_all": [0.5, 0.7, 0.7, 0.4], "scratch": [0.6, 0.6, 0.6, 0.6]}))
    assert [(c.ahead, c.behind, c.below, c.above) for c in back] == [
        ("freeze_all", "scratch", 10, 30),
        ("scratch", "freeze_all", 100, 300),
    ]


def test_a_crossover_inside_the_seeds_spread_is_called_a_hint_in_words():
    """Catches: a 0.01 flip with 0.05 seed spread reported as if it were a finding."""
    found = crossovers(curve({"freeze_all": [0.60, 0.60], "scratch": [0.59, 0.61]}, sizes=(10, 30), std=0.05))
    assert len(found) == 1 and not found[0].beyond_spread
    assert "within the seeds' spread of 0.050" in found[0].sentence()
    assert "between 10 and 30 per class" in found[0].sentence()


def test_the_summary_says_whether_more_labels_change_the_best_regime():
    """Catches: a summary that claims a change of winner where one regime leads everywhere, or misses one."""
    steady = curve({"freeze_all": [0.7, 0.8, 0.9, 0.95], "scratch": [0.2, 0.3, 0.5, 0.6]})
    assert best_by_size(steady) == [(10, "freeze_all"), (30, "freeze_all"), (100, "freeze_all"), (300, "freeze_all")]
    lines = summary_lines("large_similar", steady)
    assert "more labels would not change the answer" in lines[0] and "No two regimes cross" in lines[1]
    changing = curve({"freeze_all": [0.7, 0.8, 0.8, 0.8], "scratch": [0.2, 0.5, 0.85, 0.9]})
    lines = summary_lines("large_different", changing)
    assert "changes with the number of labels (10: freeze_all, 30: freeze_all, 100: scratch, 300: scratch" in lines[0]
    assert "scratch overtakes freeze_all between 30 and 100 per class" in lines[1]


def test_one_leader_at_every_size_by_less_than_the_spread_is_called_a_hint():
    """Catches: "more labels would not change the answer" said of a leader whose lead at some size is inside the
    seeds' spread (scenario 4's textures: scratch ahead of finetune_all by 0.003 with spread 0.016 at the full
    split, where the verdict, on more seeds, puts finetune_all first), or the close size misnamed."""
    close = curve({"finetune_all": [0.25, 0.37, 0.428], "scratch": [0.30, 0.39, 0.432]}, sizes=(10, 30, 70), std=0.016)
    head = summary_lines("large_different", close)[0]
    assert "scratch is best on validation at every size (10, 30, 70 per class)" in head
    assert "within the seeds' spread at 70 per class (+0.004 over finetune_all, spread 0.016)" in head
    assert "10 per class" not in head.split("spread at")[1] and "would not change" not in head
    assert "a hint, not a finding" in head


def test_sizes_run_are_those_below_the_comparisons_split_then_the_split_itself():
    """Catches: a subset as large as the split trained again (it is the comparison's own run), a size above
    the smallest class (first_per_class would fail on it), or finetune.train_per_class ignored."""
    from transferlab.training.size_curve import full_per_class, nearest_in_size, subset_sizes

    assert subset_sizes([10, 30, 100, 300, None], 500) == [10, 30, 100, 300, 500]
    assert subset_sizes([10, 600, None], 500) == [10, 500]
    assert subset_sizes([10, 30], 20) == [10, 20]

    class Card:
        counts_per_class = {"train": {"a": 500, "b": 480}}

    assert full_per_class(Card(), None) == 480  # type: ignore[arg-type]
    assert full_per_class(Card(), 100) == 100  # type: ignore[arg-type]
    sizes = {"small_similar": 30, "large_similar": 500}
    assert [nearest_in_size(n, sizes) for n in (10, 30, 100, 300)] == [
        "small_similar",
        "small_similar",
        "small_similar",  # |log(100/30)| = 1.20 < |log(100/500)| = 1.61
        "large_similar",
    ]
    assert nearest_in_size(122, sizes) == "small_similar" and nearest_in_size(123, sizes) == "large_similar"
    assert nearest_in_size(100, {"small_similar": 10, "large_similar": 1000}) == "large_similar", "a tie: the larger"


def test_a_size_curve_run_is_the_comparison_run_on_a_named_subset(monkeypatch):
    """Catches: size-curve cells that share a state folder (and so a result) with the comparison's cell or with
    each other, that train on the full split, or that drop the searched rate."""
    from transferlab.core.artifacts import SearchRecord
    from transferlab.core.config import load_config
    from transferlab.training.comparison import seed_spec
    from transferlab.training.size_curve import point_spec

    monkeypatch.chdir(__import__("helpers").REPO)
    cfg = load_config("size_curve", [])
    search = SearchRecord(
        method="grid", seed=100, grid_lr=[0.003], trials=[], lr=0.003, variant="two_phase", at_edge=False
    )
    full = seed_spec(cfg, "finetune_all", "large_similar", 0, 150, search, stage="size_curve")
    ten = point_spec(cfg, "finetune_all", "large_similar", 0, 150, search, 10)
    thirty = point_spec(cfg, "finetune_all", "large_similar", 0, 150, search, 30)
    assert len({full.name, ten.name, thirty.name}) == 3
    assert (ten.train_per_class, thirty.train_per_class) == (10, 30) and ten.recipe == full.recipe
    assert ten.recipe.lr == 0.003 and ten.tags()["train_per_class"] == "10" and ten.tags()["stage"] == "size_curve"


def record(seed: int, val: float) -> CellRecord:
    return CellRecord(
        seed=seed, val_acc=val, best_epoch=1, epochs=2, test=Metrics(acc=val, macro_f1=val, loss=1.0, ece=0.1)
    )


def test_the_report_says_how_to_turn_the_curve_on_and_tabulates_it_when_on():
    """Catches: an off curve that leaves the report silent (a user cannot tell it was never measured), or an on
    curve whose table misses a size, marks the wrong row as the comparison's, or mixes seeds up."""
    from transferlab.report import size_curve_markdown

    cfg = OmegaConf.create(
        {"seeds": [0, 1], "size_curve": {"run": False, "quadrants": ["large_similar"], "per_class": [10, None]}}
    )
    off = "\n".join(size_curve_markdown(cfg, SizeCurveResults(run=False)))
    assert "`dvc exp run -S size_curve.run=true`" in off and "10, all images per class of large_similar" in off
    points = {
        regime: [
            SizePoint(
                per_class=n,
                n_train=5 * n,
                tuned_on="small_similar" if n == 10 else "large_similar",
                from_comparison=n == 500,
                seeds={"0": record(0, base + 0.1 * i), "1": record(1, base + 0.1 * i + 0.02)},
                lr=0.01,
            )
            for i, n in enumerate((10, 500))
        ]
        for regime, base in (("freeze_all", 0.5), ("scratch", 0.2))
    }
    on = SizeCurveResults(run=True, steps=150, quadrants={"large_similar": points})
    text = "\n".join(size_curve_markdown(cfg, SizeCurveResults.parse_text(on.model_dump_json())))
    assert "| 10 | 0.510 ± 0.014 / 0.510 ± 0.014 | 0.210 ± 0.014 / 0.210 ± 0.014 |" in text
    assert "| 500 (all) | 0.610 ± 0.014" in text
    assert "freeze_all is best on validation at every size" in text and "figures/size_curve.png" in text


def test_a_change_of_leader_made_only_of_crossovers_inside_the_spread_is_called_a_hint():
    """Catches: a summary that says the best regime changes with the labels when every flip behind it is noise."""
    noisy = curve({"freeze_all": [0.60, 0.62], "finetune_all": [0.61, 0.61]}, sizes=(10, 30), std=0.05)
    assert "a hint, not a finding" in summary_lines("large_similar", noisy)[0]
    clear = curve({"freeze_all": [0.60, 0.70], "finetune_all": [0.61, 0.61]}, sizes=(10, 30), std=0.01)
    assert "a hint" not in summary_lines("large_similar", clear)[0]
