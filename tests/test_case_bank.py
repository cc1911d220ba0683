"""The advisor held to measured cases (issue 25): the k-NN and linear probes, the bank's pick and its
expected regret, the cross-validated scores of every rule, the bank file, and the call at each size of
the data-size curve. The bank built from a real pipeline run is tests/test_pipeline_e2e.py's."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.analysis.advice import bank_pick, course_note_pick, rule_picks, score_rules
from transferlab.analysis.transferability import knn_accuracy, linear_probe_accuracy
from transferlab.core.artifacts import Case, CaseBank, StageScores
from transferlab.core.errors import ConfigError

STAGES = ["stem", "stage1", "stage2", "stage3"]


def scores(probe: float, probe_random: float = 0.3, knn: float | None = None, cut_gain: float = 0.0):
    """Stage scores whose last stage's probe is ``probe`` and stage2's ``probe + cut_gain``."""
    out = {}
    for stage in STAGES:
        p = probe + cut_gain if stage == "stage2" else probe if stage == "stage3" else probe - 0.1
        k = knn if knn is not None else p
        out[stage] = StageScores(
            logme=p,
            logme_random=probe_random,
            knn=k,
            knn_random=probe_random,
            probe=p,
            probe_random=probe_random,
            pad=1.0,
        )
    return out


def case(
    name: str,
    per_class: float,
    probe: float,
    val: dict[str, float],
    tied: list[str] | None = None,
    scenario: str = "s",
    similar: bool = True,
    real: bool = False,
    **kw,
) -> Case:
    best = max(val, key=lambda r: val[r])
    return Case(
        case=name,
        scenario=scenario,
        real=real,
        target="large_similar" if similar else "large_different",
        dataset="d",
        similar=similar,
        classes=5,
        images_per_class=per_class,
        steps=150,
        seeds=3,
        commit="abc",
        stages=scores(probe, **kw),
        val=val,
        call="tie" if tied and len(tied) > 1 else "clear",
        tied=tied or [best],
        recommended=best,
    )


FROZEN_WINS = {"freeze_all": 0.80, "truncate_freeze": 0.70, "finetune_all": 0.72, "scratch": 0.40}
TUNED_WINS = {"freeze_all": 0.70, "truncate_freeze": 0.65, "finetune_all": 0.90, "scratch": 0.60}


def small_and_large_bank() -> list[Case]:
    """Three small targets with good features where freeze_all wins, three large where finetune_all wins."""
    return [
        *(case(f"s/small/{i}", 10 + i, 0.8, FROZEN_WINS) for i in range(3)),
        *(case(f"s/large/{i}", 500 + 50 * i, 0.6, TUNED_WINS) for i in range(3)),
    ]


def test_knn_leaves_each_image_out_of_its_own_vote():
    """Catches: the query counted as its own nearest neighbour (every image then votes for itself:
    accuracy 1.0 whatever the features) and distances that are not cosine."""
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    y = np.array([0, 0, 1, 1, 0])  # the last one sits among class 1
    assert knn_accuracy(x, y, k=1) == pytest.approx(4 / 5)
    assert knn_accuracy(10 * x, y, k=1) == pytest.approx(4 / 5)  # scale-free


def test_linear_probe_separates_what_is_separable_and_not_noise():
    """Catches: a probe scored on its own training fold (noise labels would then score near 1)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    separable = rng.normal(size=(180, 20)) + 4 * np.eye(3)[y] @ rng.normal(size=(3, 20))
    assert linear_probe_accuracy(separable, y) > 0.95
    assert linear_probe_accuracy(rng.normal(size=(180, 20)), y) < 0.55  # chance: 1/3


def test_the_bank_picks_what_won_on_the_nearest_cases_with_its_regret():
    """Catches: a vote over the wrong neighbours (farthest, or all cases), a regret taken against the
    leader or of the wrong sign, and a hit rate over the bank rather than the neighbours."""
    bank = small_and_large_bank()
    rule, advice = bank_pick(scores(0.8), 5, 12, bank)
    assert rule.regime == "freeze_all" and rule.cut_at is None
    assert [n.case for n in advice.neighbours] == ["s/small/2", "s/small/1", "s/small/0"]
    assert advice.expected_regret == 0.0 and advice.hit_rate == 1.0 and not advice.unlike_bank
    rule, advice = bank_pick(scores(0.6), 5, 520, bank)
    assert rule.regime == "finetune_all" and advice.expected_regret == 0.0
    assert {n.recommended for n in advice.neighbours} == {"finetune_all"}
    assert "s/large/" in rule.reason


def test_the_bank_says_when_a_case_is_unlike_any_it_holds():
    """Catches: a pick from a far-away case presented as confidently as one from a near twin."""
    rule, advice = bank_pick(scores(0.05, probe_random=0.9), 5, 100_000, small_and_large_bank())
    assert advice.unlike_bank and "unlike any in the bank" in rule.reason


def test_a_truncate_freeze_pick_cuts_where_the_probe_scores_best():
    """Catches: truncate_freeze advised without a cut point, or cut at the last stage (that is freeze_all)."""
    cut_wins = {"freeze_all": 0.70, "truncate_freeze": 0.85, "finetune_all": 0.72, "scratch": 0.40}
    bank = [case(f"s/cut/{i}", 30, 0.5, cut_wins, cut_gain=0.2) for i in range(3)]
    rule, _ = bank_pick(scores(0.5, cut_gain=0.2), 5, 30, bank)
    assert rule.regime == "truncate_freeze" and rule.cut_at == "stage2"


def test_an_even_vote_goes_to_the_cheaper_regime():
    """Catches: a tie in mean regret settled by name or by list order instead of by training cost."""
    level = {"freeze_all": 0.8, "truncate_freeze": 0.8, "finetune_all": 0.8, "scratch": 0.8}
    bank = [case(f"s/level/{i}", 30, 0.5, level, tied=list(level)) for i in range(3)]
    assert bank_pick(scores(0.5), 5, 30, bank)[0].regime == "truncate_freeze"


def test_scores_hold_the_case_out_and_the_stricter_one_its_whole_target():
    """Catches: a case that votes for itself (leave-one-out would then hit every case) and a
    leave-target-out that keeps the same target's other sizes."""
    bank = small_and_large_bank()
    # A small target, twin of the small ones, where scratch won: only its own row says so.
    odd = case(
        "t/small/odd",
        11,
        0.8,
        {"freeze_all": 0.5, "truncate_freeze": 0.5, "finetune_all": 0.5, "scratch": 0.9},
        scenario="t",
    )
    twins = [case(f"t/small/{i}", 12 + i, 0.8, FROZEN_WINS, scenario="t") for i in range(2)]
    picks = rule_picks([*bank, odd, *twins], small_per_class=100)
    assert picks["t/small/odd"]["bank, leave one case out"] == "freeze_all"  # not scratch: its own row is out
    found = score_rules([*bank, odd, *twins], small_per_class=100)
    one_out = found.scores["all"]["bank, leave one case out"]
    assert one_out.cases == 9 and one_out.hits == 8 and one_out.worst_regret == pytest.approx(0.4)
    # Leave-target-out: "t"'s twins cannot vote for each other; "s"'s small ones still answer for them.
    assert picks["t/small/0"]["bank, leave its target out"] == "freeze_all"
    only = [case("u/a", 10, 0.8, FROZEN_WINS, scenario="u"), case("u/b", 11, 0.8, FROZEN_WINS, scenario="u")]
    assert rule_picks(only, 100)["u/a"]["bank, leave its target out"] == ""  # nothing else to draw on
    assert score_rules(only, 100).scores["all"]["bank, leave its target out"].cases == 0


def test_baselines_are_the_course_note_and_the_constant_picks():
    """Catches: the course note's rule reading the wrong size line or similarity."""
    small_different = case("x", 30, 0.5, FROZEN_WINS, similar=False)
    large_similar = case("y", 500, 0.5, FROZEN_WINS, similar=True)
    assert course_note_pick(small_different, 100) == "truncate_freeze"
    assert course_note_pick(large_similar, 100) == "finetune_all"
    picks = rule_picks([small_different, large_similar], 100)["x"]
    assert picks["always finetune_all"] == "finetune_all" and picks["always freeze_all"] == "freeze_all"
    real = score_rules([case("r", 30, 0.5, FROZEN_WINS, real=True), small_different], 100)
    assert real.real_cases == 1 and real.scores["real"]["always freeze_all"].hit_rate == 1.0


def test_the_bank_file_round_trips_and_rejects_unknown_columns(tmp_path):
    """Catches: a column lost or renamed between the tool that writes the bank and the stage that reads
    it, a tied set that does not survive the CSV, a case of another network (other stages, no source images:
    pad None, as EfficientNet-Lite0 with its ImageNet weights) that cannot share the file or comes back
    with the other network's stages, and an unknown column read silently."""
    lite = case("s/imagenet", 30, 0.5, FROZEN_WINS)
    last = list(lite.stages.values())[-1].model_copy(update={"pad": None})
    no_source = lite.model_copy(update={"stages": {s: last for s in ("stem", "stage1", "stage5", "top")}})
    bank = CaseBank(
        cases=small_and_large_bank() + [case("s/tie", 30, 0.5, TUNED_WINS, tied=["finetune_all", "scratch"]), no_source]
    )
    path = tmp_path / "bank.csv"
    bank.save(path)
    assert CaseBank.load(path) == bank
    assert list(CaseBank.load(path).cases[-1].stages) == ["stem", "stage1", "stage5", "top"]
    assert list(CaseBank.load(path).cases[0].stages) == list(bank.cases[0].stages)
    header, *rows = path.read_text().splitlines()
    path.write_text(header + ",colour\n" + "\n".join(r + ",red" for r in rows) + "\n")
    with pytest.raises(ConfigError, match="unknown column 'colour'"):
        CaseBank.load(path)
    with pytest.raises(ConfigError, match="not found: build it with `python tools/case_bank.py`"):
        CaseBank.load(tmp_path / "missing.csv")


def test_the_call_at_each_size_is_made_as_the_comparisons():
    """Catches: a size's call made on means alone (a lead inside the noise then looks clear) or the
    full split counted again as a subset."""
    from test_verdict import one_quadrant, record, seeds_at

    from transferlab.analysis.size_curve import size_verdicts
    from transferlab.core.artifacts import SizeCurveResults, SizePoint

    def point(per_class: int, correct: list[str], full: bool = False) -> SizePoint:
        return SizePoint(
            per_class=per_class,
            n_train=5 * per_class,
            tuned_on="small_similar",
            from_comparison=full,
            seeds={str(s): record(s, bits) for s, bits in enumerate(correct)},
        )

    strong, weak = ["1" * 40] * 3, ["1" * 20 + "0" * 20] * 3
    close = ["1" * 39 + "0", "1" * 40, "1" * 38 + "01"]
    comparison = one_quadrant({"freeze_all": seeds_at(0.8, 0), "finetune_all": seeds_at(0.8, 1)})
    points = {
        "freeze_all": [point(10, strong), point(30, close), point(500, strong, full=True)],
        "finetune_all": [point(10, weak), point(30, strong), point(500, strong, full=True)],
    }
    found = size_verdicts(SizeCurveResults(run=True, steps=150, quadrants={"large_similar": points}), comparison)
    assert list(found["large_similar"]) == [10, 30]
    at_10, at_30 = found["large_similar"][10].verdict, found["large_similar"][30].verdict
    assert at_10.call == "clear" and at_10.recommended == "freeze_all"
    assert at_30.call == "tie" and set(at_30.tied) == {"freeze_all", "finetune_all"}


def test_the_report_judges_the_goal_on_the_real_cases_with_the_stricter_hold_out():
    """Catches: the goal judged on all cases (generated ones included), on the lenient leave-one-case-out
    scores, or "better than every baseline" granted when a baseline has the same hit rate and less regret."""
    from transferlab.core.artifacts import AdviceScores, RuleScore
    from transferlab.report import bank_scores_markdown, goal_sentence

    def score(rule: str, hit_rate: float, regret: float) -> RuleScore:
        return RuleScore(
            rule=rule, cases=4, hits=round(4 * hit_rate), hit_rate=hit_rate, mean_regret=regret, worst_regret=regret
        )

    def scores(strict: tuple[float, float], lenient: tuple[float, float], baseline: tuple[float, float]):
        real = {
            "bank, leave one case out": score("bank, leave one case out", *lenient),
            "bank, leave its target out": score("bank, leave its target out", *strict),
            "always freeze_all": score("always freeze_all", *baseline),
        }
        generated = {r: score(r, 1.0, 0.0) for r in real}
        return AdviceScores(bank_cases=8, real_cases=4, scores={"all": generated, "real": real}, picks={})

    assert "goal is **met**" in goal_sentence(scores((0.75, 0.01), (0.5, 0.1), (0.5, 0.05)))
    assert "goal is **not met**" in goal_sentence(scores((0.5, 0.05), (1.0, 0.0), (0.25, 0.1)))  # strict misses
    tied = goal_sentence(scores((0.75, 0.02), (1.0, 0.0), (0.75, 0.01)))
    assert "beats 0 of 1 baselines" in tied and "not met" in tied
    table = "\n".join(bank_scores_markdown(scores((0.75, 0.01), (0.5, 0.1), (0.5, 0.05))))
    assert "| bank, leave its target out | 1.00 (4/4) | 0.000 | 0.000 | 0.75 (3/4) | 0.010 | 0.010 |" in table
