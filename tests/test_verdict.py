"""The verdict: a paired statistical call on validation data only, ties to the cheaper regime, the race for
seeds, and the flags (not converged, edge of the grid)."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.analysis.statistics import paired_bootstrap, still_improving
from transferlab.analysis.verdict import call_level, comparison, regime_summary, sentence
from transferlab.core.artifacts import CellRecord, Cost, QuadrantSeeds, SearchRecord, TrialRecord
from transferlab.training.race import race

IMAGES = 400


def bits(accuracy: float, seed: int, base: np.ndarray | None = None, flips: float = 0.0) -> str:
    """A validation correctness pattern with ``accuracy``; with ``base``, the same images as ``base`` right,
    except a share ``flips`` of them redrawn (regimes that err on the same images, as real ones do)."""
    rng = np.random.default_rng(seed)
    if base is None:
        right = np.zeros(IMAGES, dtype=int)
        right[: round(accuracy * IMAGES)] = 1
        right = rng.permutation(right)
    else:
        right = base.copy()
        redraw = rng.random(IMAGES) < flips
        right[redraw] = rng.random(redraw.sum()) < accuracy
    return "".join(map(str, right))


def record(seed: int, correct: str, test: float = 0.5, curve: list[float] | None = None) -> CellRecord:
    acc = correct.count("1") / len(correct)
    return CellRecord.model_validate(
        {
            "seed": seed,
            "val_acc": acc,
            "best_epoch": 1,
            "epochs": 10,
            "val_correct": correct,
            "val_by_epoch": curve or [acc] * 10,
            "test": {"acc": test, "macro_f1": test, "loss": 1.0, "ece": 0.1},
        }
    )


def seeds_at(
    accuracy: float, offset: int, seeds=(0, 1, 2), test: float = 0.5, cost: float = 1e9, lr: float = 0.01
) -> QuadrantSeeds:
    records = {str(s): record(s, bits(accuracy, 1000 * offset + s), test) for s in seeds}
    best = max(records, key=lambda s: records[s].val_acc)
    return QuadrantSeeds(
        chosen_seed=int(best),
        seeds=records,
        lr=lr,
        cost=Cost(train_flops=cost, trainable_params=10, inference_params=10, inference_flops=1.0),
    )


def verdict_of(found: dict[str, QuadrantSeeds], quadrant: str = "large_similar", race_extra=None):
    results = {regime: {"150": {quadrant: q}} for regime, q in found.items()}
    made = comparison(results, {"150": {quadrant: race_extra or {}}}, [quadrant], [150], 0.95, 0.95)
    return made.budgets["150"][quadrant]


def test_the_bootstrap_interval_covers_the_true_difference_and_is_paired():
    """Catches: an unpaired or seed-only bootstrap (too wide for regimes erring on the same images), and an
    interval that does not contain the observed difference."""
    rng = np.random.default_rng(0)
    a = (rng.random((3, IMAGES)) < 0.70).astype(int)
    b = a.copy()
    b[:, :12] = 0  # b is a with 12 of 400 images (3 points) wrong: the same images otherwise
    a[:, :12] = 1
    found = paired_bootstrap(a, b)
    assert found.mean == pytest.approx(0.03, abs=1e-9)
    assert 0 < found.low <= found.mean <= found.high and found.p_better == 1.0
    unrelated = (rng.random((3, IMAGES)) < 0.67).astype(int)
    assert paired_bootstrap(a, unrelated).low < 0 < paired_bootstrap(a, unrelated).high


def test_a_clear_winner_and_a_tie_are_called_on_validation_never_test():
    """Catches: a winner called on the mean alone (a tie reported as a win), or on test accuracy."""
    clear = verdict_of({"freeze_all": seeds_at(0.80, 1, test=0.1), "finetune_all": seeds_at(0.60, 2, test=0.9)})
    assert clear.verdict.call == "clear" and clear.verdict.recommended == "freeze_all"
    assert clear.verdict.rivals["finetune_all"].low > 0 and clear.verdict.tied == ["freeze_all"]
    close = verdict_of({"freeze_all": seeds_at(0.70, 1), "finetune_all": seeds_at(0.705, 2)})
    assert close.verdict.call == "tie" and sorted(close.verdict.tied) == ["finetune_all", "freeze_all"]
    assert close.verdict.rivals["freeze_all"].low < 0 < close.verdict.rivals["freeze_all"].high


def test_a_tie_recommends_the_cheaper_regime_and_says_so():
    """Catches: a tie resolved to the leader (the noise decides), or to a costlier regime."""
    found = {"finetune_all": seeds_at(0.705, 1, cost=4e12), "freeze_all": seeds_at(0.70, 2, cost=1e10)}
    entry = verdict_of(found)
    v = entry.verdict
    assert v.call == "tie" and v.leader == "finetune_all" and v.recommended == "freeze_all"
    assert "freeze_all is the cheapest of the tied regimes (400x fewer training FLOPs than finetune_all)" in v.reason
    assert v.chosen_seed == entry.regimes["freeze_all"].chosen_seed
    assert sentence("large_similar", entry).startswith("**large_similar**: use `freeze_all`")


def test_the_call_level_is_split_over_the_race_looks():
    """Catches: racing seeds with an unadjusted level, which makes a false clear call likelier at each look."""
    assert call_level(0.95, 3, 5) == pytest.approx(1 - 0.05 / 3, abs=1e-6)
    assert call_level(0.95, 3, 3) == 0.95


def test_the_race_adds_seeds_to_contenders_only_and_stops_at_max_seeds():
    """Catches: seeds added to every regime (wasted where the call is settled), to the tuning seed, or past
    max_seeds; and a race that goes on after the call became clear."""
    found = {"freeze_all": seeds_at(0.70, 1), "finetune_all": seeds_at(0.705, 2), "scratch": seeds_at(0.3, 3)}
    trained = []

    def call(extra):
        return verdict_of(found, race_extra=extra).verdict

    def train(todo):
        trained.extend(todo)
        return [record(s, bits(0.70 if r == "freeze_all" else 0.705, 7000 + s)) for r, s in todo]

    seeds_of = {r: {0, 1, 2} for r in found}
    extra, looks = race(seeds_of, call, train, max_seeds=5, tune_seed=3)
    assert {r for r, _ in trained} == {"freeze_all", "finetune_all"}, "scratch is out of the race"
    assert sorted(trained) == [("finetune_all", 4), ("finetune_all", 5), ("freeze_all", 4), ("freeze_all", 5)]
    assert len(looks) == 2 and all(sorted(look.split("+")) == ["finetune_all", "freeze_all"] for look in looks)
    assert set(extra["freeze_all"]) == {"4", "5"}
    summary = regime_summary(found["freeze_all"], extra["freeze_all"])
    assert summary.seeds == [0, 1, 2, 4, 5] and summary.race_seeds == [4, 5]

    clear = {"freeze_all": seeds_at(0.80, 1), "finetune_all": seeds_at(0.60, 2)}
    trained.clear()
    assert race({r: {0, 1, 2} for r in clear}, lambda e: verdict_of(clear, race_extra=e).verdict, train, 5, 3) == (
        {},
        [],
    )
    assert trained == []


def test_a_run_still_improving_in_the_last_third_is_flagged():
    """Catches: a short budget's verdict shown as final when the runs had not converged, and the opposite
    defect: a rise of one validation image (noise) flagged as "not converged" (it flagged 15 of 16 regime results)."""
    assert still_improving([[0.3, 0.4, 0.5, 0.55, 0.6, 0.62, 0.64, 0.7, 0.75, 0.8]], n_val=400)
    assert not still_improving([[0.3, 0.6, 0.7, 0.72, 0.72, 0.72, 0.71, 0.72, 0.70, 0.72]], n_val=400)
    one_image = [0.5, 0.6, 0.64, 0.66, 0.668, 0.668, 0.664, 0.672, 0.668, 0.668]
    assert not still_improving([one_image], n_val=250), "0.668 -> 0.672 is one image of 250"
    flat = [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    jump = [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.75, 0.7, 0.7]
    assert still_improving([jump], n_val=250) and not still_improving([jump, flat, flat], n_val=250), (
        "the mean over seeds decides, not the luckiest seed"
    )
    rising = QuadrantSeeds(
        chosen_seed=0,
        lr=0.01,
        seeds={"0": record(0, bits(0.8, 1), curve=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.6, 0.7, 0.75, 0.8])},
    )
    flat_seeds = seeds_at(0.5, 2, seeds=(0,))
    entry = verdict_of({"scratch": rising, "freeze_all": flat_seeds})
    assert entry.verdict.not_converged == ["scratch"]
    assert entry.regimes["scratch"].still_improving == {"0": [0.6, 0.8]}
    assert "Not converged: scratch" in sentence("large_similar", entry)


def test_a_choice_at_the_edge_of_the_grid_is_flagged():
    """Catches: a tuned rate at the grid's end reported as if the grid had bracketed the optimum."""

    def searched(lr: float) -> SearchRecord:
        trials = [
            TrialRecord(lr=v, variant="", val_by_epoch=[0.5], best=0.9 if v == lr else 0.5) for v in (0.001, 0.01, 0.1)
        ]
        from transferlab.training.search import Point, SearchResult, TrialResult

        result = SearchResult([TrialResult(Point(t.lr), [t.best], t.best) for t in trials])
        return SearchRecord(
            method="grid",
            seed=100,
            grid_lr=[0.001, 0.01, 0.1],
            trials=trials,
            lr=lr,
            variant="",
            at_edge=result.at_edge([0.001, 0.01, 0.1]),
        )

    assert searched(0.1).at_edge and searched(0.001).at_edge and not searched(0.01).at_edge
    edge = seeds_at(0.7, 1).model_copy(update={"search": searched(0.1), "lr": 0.1})
    assert regime_summary(edge).at_edge and regime_summary(edge).tuned


def one_quadrant(found: dict[str, QuadrantSeeds], quadrant: str = "large_similar"):
    results = {regime: {"150": {quadrant: q}} for regime, q in found.items()}
    return comparison(results, {"150": {quadrant: {}}}, [quadrant], [150], 0.95, 0.95)


def test_the_summary_says_where_the_pretrained_network_did_not_transfer_and_reports_it():
    """Catches: scratch winning (or tying) with the summary silent about the weak source network, a
    false alarm where a pretrained regime clearly beats scratch, and the source network's own accuracy
    missing from the report."""
    from transferlab.core.artifacts import PretrainMeta
    from transferlab.report import did_not_transfer, source_network

    [line] = did_not_transfer(one_quadrant({"scratch": seeds_at(0.80, 1), "finetune_all": seeds_at(0.60, 2)}))
    assert "large_similar" in line and "scratch leads" in line and "did not transfer" in line
    assert "pretrain.epochs" in line and "pretrain.source: file" in line
    [tied] = did_not_transfer(one_quadrant({"scratch": seeds_at(0.70, 1), "finetune_all": seeds_at(0.705, 2)}))
    assert "scratch ties the leader finetune_all" in tied
    assert did_not_transfer(one_quadrant({"scratch": seeds_at(0.50, 1), "finetune_all": seeds_at(0.80, 2)})) == []

    meta = PretrainMeta(
        model={"name": "small_resnet"},
        source="pipeline",
        stages=["stem"],
        image_size=32,
        classes=["a", "b"],
        val_acc=0.61,
        test_acc=0.6,
    )
    said = source_network(meta, 8)
    assert "small_resnet trained here on the source data (2 classes, 8 epochs)" in said
    assert "validation accuracy 0.610" in said and "0.600 on its test split" in said
    mine = meta.model_copy(update={"source": "file", "weights_file": "mine.pt", "weights_sha256": "ab" * 32})
    assert "your weights from mine.pt (sha256 abababababab" in source_network(mine, 8)


def test_a_tie_between_equal_costs_says_the_regime_order_decided_not_a_cost():
    """Catches: "the cheapest of the tied regimes (1.0x fewer training FLOPs ...)" for two regimes that
    cost the same (finetune_all and scratch train the same network), a claim the numbers contradict."""
    v = verdict_of({"scratch": seeds_at(0.706, 1), "finetune_all": seeds_at(0.70, 2)}).verdict
    assert v.call == "tie" and v.leader == "scratch" and v.recommended == "finetune_all"
    assert "finetune_all costs the same as scratch" in v.reason and "the tie goes to the regime first" in v.reason
    assert "fewer training FLOPs" not in v.reason


def test_the_summary_says_what_a_ties_cheaper_recommendation_gives_up():
    """Catches: a tie whose cheaper recommendation trails the leader with the gap unsaid (the reason names only
    the runner-up), and the line appearing when the leader itself is recommended or the call is clear."""
    from transferlab.report import tie_costs

    cheap = seeds_at(0.68, 3, cost=1e7)
    tied = one_quadrant({"finetune_all": seeds_at(0.70, 1), "scratch": seeds_at(0.695, 2), "freeze_all": cheap})
    v = tied["large_similar"].verdict
    assert v.call == "tie" and v.leader == "finetune_all" and v.recommended == "freeze_all"
    [_, _, line] = tie_costs(tied)
    gap = v.rivals["freeze_all"]
    assert f"`freeze_all` is {gap.diff:.3f} behind `finetune_all`" in line
    assert f"[{gap.low:+.3f}, {gap.high:+.3f}]" in line and "Take `finetune_all`" in line
    assert tie_costs(one_quadrant({"finetune_all": seeds_at(0.70, 1), "scratch": seeds_at(0.695, 2)})) == []
    assert tie_costs(one_quadrant({"finetune_all": seeds_at(0.90, 1), "freeze_all": seeds_at(0.40, 2)})) == []


def test_a_target_that_held_near_copies_carries_a_leakage_warning_in_the_sentence_and_the_note():
    """Catches: a call on a target whose folder came with near-copies across its splits shown without the
    warning (its scores may be optimistic), and a warning on a target without them."""
    from transferlab.report import parent_note

    made = one_quadrant({"scratch": seeds_at(0.70, 1), "finetune_all": seeds_at(0.80, 2)})
    assert "Leakage warning" not in sentence("large_similar", made.quadrants["large_similar"])
    assert "Leakage warning" not in parent_note(made, "The pretrained network: x")
    made.quadrants["large_similar"].near_copies = 7
    assert "held 7 near-copies of its own val/test images" in sentence("large_similar", made.quadrants["large_similar"])
    assert "- large_similar: Leakage warning: this target's folder held 7 near-copies" in parent_note(
        made, "The pretrained network: x"
    )
