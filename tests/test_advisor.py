"""The regime advisor (issue 17): the LogME estimator against an independent computation, the proxy
A-distance at its two ends, the a-priori rule on synthetic score tables, its check against a measured
comparison, and the `advise` stage's bad input (one line, before any work). The stage end to end on
tiny data is tests/test_pipeline_e2e.py::test_the_advisor_runs_in_the_pipeline_and_is_checked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_bad_inputs import run_stage_here

from helpers import card_json, copy_project, pretrain_meta_json, tree_digest
from transferlab.analysis.advice import check, recommend, spearman
from transferlab.analysis.transferability import LogME, proxy_a_distance


def log_evidence(features: np.ndarray, target: np.ndarray, alpha: float, beta: float) -> float:
    """log N(target | 0, I/beta + F F^T/alpha): the evidence of Bayesian linear regression with the
    weights integrated out, computed directly (Cholesky of the N x N covariance), nothing shared with LogME."""
    n = len(target)
    cov = np.eye(n) / beta + features @ features.T / alpha
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, target)
    return float(-0.5 * z @ z - np.log(np.diag(chol)).sum() - n / 2 * np.log(2 * np.pi))


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)], ids=["more-images-than-features", "fewer-images-than-features"])
def test_logme_equals_the_marginal_likelihood_computed_independently(n, d):
    """Catches: a wrong evidence formula (a missing log-det term, D vs rank confusion when N < D) or a
    score that is not the mean over classes of log evidence / N."""
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(n, d)), np.arange(n) % 3
    estimator = LogME()
    score = estimator.fit(features, labels)
    for c in range(3):
        expected = log_evidence(features, (labels == c).astype(float), estimator.alphas_[c], estimator.betas_[c]) / n
        assert abs(estimator.evidences_[c] - expected) < 1e-6
    assert abs(score - estimator.evidences_.mean()) < 1e-12


def test_logme_alpha_and_beta_maximise_the_evidence():
    """Catches: a fixed-point update that converges somewhere other than the evidence's maximum (moving
    alpha or beta away from LogME's values must not raise the independently computed evidence)."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 8))
    labels = (features[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int)
    estimator = LogME(iterations=200, tolerance=1e-9)
    estimator.fit(features, labels)
    target = (labels == 1).astype(float)
    alpha, beta = estimator.alphas_[1], estimator.betas_[1]
    best = log_evidence(features, target, alpha, beta)
    for a, b in [(alpha * 2, beta), (alpha / 2, beta), (alpha, beta * 1.5), (alpha, beta / 1.5)]:
        assert log_evidence(features, target, a, b) < best


def test_separable_features_score_higher_than_shuffled_labels():
    """Catches: a score that ignores the labels, or ranks noise above features that separate the classes."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 50)
    features = np.eye(4)[labels] * 3 + 0.1 * rng.normal(size=(200, 4))
    features = np.concatenate([features, rng.normal(size=(200, 12))], axis=1)
    separable = LogME().fit(features, labels)
    shuffled = LogME().fit(features, rng.permutation(labels))
    assert separable > shuffled + 0.1


def test_logme_rejects_one_class_and_mismatched_shapes():
    """Catches: a score for one class (meaningless), or features and labels of different lengths accepted."""
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogME().fit(np.ones((5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="features must be"):
        LogME().fit(np.ones((5, 3)), np.arange(4) % 2)


def test_proxy_a_distance_is_near_0_for_one_distribution_and_near_2_for_separable_ones():
    """Catches: a swapped error (PAD high for identical domains) or a classifier scored on its training half."""
    rng = np.random.default_rng(3)
    same = proxy_a_distance(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)))
    apart = proxy_a_distance(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)) + 4)
    assert same < 0.4 and apart > 1.9


STAGES = ["stem", "stage1", "stage2", "stage3"]


@pytest.mark.parametrize(
    "per_class,logme,random,regime,cut",
    [
        (30, [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5], "scratch", None),
        (30, [0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.1, 0.1], "freeze_all", None),
        (30, [0.1, 0.5, 0.3, 0.2], [0.0, 0.1, 0.1, 0.1], "truncate_freeze", "stage1"),
        (100, [0.1, 0.5, 0.3, 0.2], [0.0, 0.1, 0.1, 0.1], "truncate_freeze", "stage1"),
        (101, [0.1, 0.5, 0.3, 0.2], [0.0, 0.1, 0.1, 0.1], "finetune_all", None),
        (5000, [0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.1, 0.1], "scratch", None),
    ],
)
def test_the_rule_on_synthetic_score_tables(per_class, logme, random, regime, cut):
    """Catches: a rule that does not follow its stated order (scratch when pretrained features are no
    better than random ones, then the size threshold inclusive at small_per_class, then the best stage)."""
    rule = recommend(per_class, STAGES, dict(zip(STAGES, logme)), dict(zip(STAGES, random)), small_per_class=100)
    assert (rule.regime, rule.cut_at) == (regime, cut)
    assert rule.reason and "\n" not in rule.reason


def comparison_entry(means: dict[str, float], std: float = 0.02):
    from transferlab.core.artifacts import QuadrantComparison, RegimeSummary, Stats, Verdict

    def summary(mean: float) -> RegimeSummary:
        stats = Stats(mean=mean, std=std, n=3)
        return RegimeSummary(
            seeds=[0, 1, 2],
            val_acc=[mean] * 3,
            val=stats,
            test={"acc": stats, "macro_f1": stats},
            test_acc=[mean] * 3,
            chosen_seed=0,
        )

    regimes = {r: summary(m) for r, m in means.items()}
    winner = max(means, key=lambda r: means[r])
    verdict = Verdict(
        leader=winner,
        ranking=sorted(means, key=lambda r: means[r], reverse=True),
        call="clear",
        tied=[winner],
        recommended=winner,
        reason="",
        rivals={},
        runner_up=None,
        level=0.95,
        call_level=0.95,
        chosen_seed=0,
        course_note="freeze_all",
        course_note_rank=None,
        not_converged=[],
    )
    return QuadrantComparison(regimes=regimes, verdict=verdict)


def stats_of(mean: float):
    from transferlab.core.artifacts import Stats

    return Stats(mean=mean, std=0.0, n=1)


def test_the_check_scores_exact_hits_regret_and_rank_correlation():
    """Catches: a hit that counts a pick outside the tied set, a regret of the wrong sign or against the
    leader instead of the recommended regime, the a-priori pick scored as the bank's, or a rank
    correlation over the wrong stages."""
    from transferlab.core.artifacts import Advice

    def advice(pick: str, a_priori: str) -> Advice:
        return Advice.model_validate(
            {
                "dataset": "small_similar",
                "classes": 2,
                "images_per_class": 5.0,
                "images_scored": 10,
                "recommendation": {"regime": pick, "cut_at": None, "reason": "r"},
                "a_priori": {"regime": a_priori, "cut_at": None, "reason": "r"},
                "course_note": "freeze_all",
                "stages": {
                    s: {
                        "logme": v,
                        "logme_random": 0.0,
                        "knn": 0.5,
                        "knn_random": 0.5,
                        "probe": 0.5,
                        "probe_random": 0.5,
                        "pad": 0.0,
                    }
                    for s, v in zip(STAGES, [0.1, 0.2, 0.3, 0.4])
                },
            }
        )

    entry = comparison_entry({"freeze_all": 0.70, "finetune_all": 0.71, "scratch": 0.50})
    entry.verdict.tied, entry.verdict.recommended = ["finetune_all", "freeze_all"], "freeze_all"
    near = check(advice("finetune_all", "scratch"), entry, None)
    assert near == {
        "pick": "finetune_all",
        "winner": "freeze_all",
        "tied": ["finetune_all", "freeze_all"],
        "hit": True,
        "regret": pytest.approx(-0.01),
        "a_priori": "scratch",
        "a_priori_hit": False,
        "a_priori_regret": pytest.approx(0.20),
    }
    sweep = {s: {"val": stats_of(m)} for s, m in zip(STAGES, [0.3, 0.4, 0.5, 0.6])}
    pick = advice("freeze_all", "freeze_all")
    assert check(pick, comparison_entry({"freeze_all": 0.7}), sweep)["spearman_cut_sweep"] == pytest.approx(1.0)
    reversed_sweep = {s: {"val": stats_of(m)} for s, m in zip(STAGES, [0.6, 0.5, 0.4, 0.3])}
    assert check(pick, comparison_entry({"freeze_all": 0.7}), reversed_sweep)["spearman_cut_sweep"] == pytest.approx(
        -1.0
    )
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None


@pytest.fixture
def advisable(tmp_path):
    """A project whose pretrain and download outputs are fakes (the checks must stop before reading weights)."""
    project = copy_project(tmp_path / "project")
    (project / "models/pretrain").mkdir(parents=True)
    (project / "models/pretrain/backbone.pt").write_bytes(b"weights")
    (project / "models/pretrain/meta.json").write_text(pretrain_meta_json(STAGES))
    for dataset in ("source", "small_similar", "small_different", "large_similar", "large_different"):
        (project / "data/raw" / dataset).mkdir(parents=True)
        (project / "data/raw" / dataset / "card.json").write_text(card_json(["a", "b"]))
    return project


@pytest.mark.parametrize(
    "card,meta,words",
    [
        (card_json(["ants"], {"ants": 124}), None, "1 class(es) ['ants']: the advisor needs at least 2 classes"),
        (
            card_json(["ants", "bees", "wasps"], {"ants": 1, "bees": 1}),
            None,
            "too few training images for the advisor in {'ants': 1, 'bees': 1, 'wasps': 0}",
        ),
        (None, pretrain_meta_json([]), "the pretrained model names no stages"),
        (None, json.dumps({"classes": 3}), "meta.json is not a PretrainMeta ('model': Field required)"),
    ],
)
def test_advise_bad_input_is_one_line_before_any_work(advisable, monkeypatch, card, meta, words):
    """Catches: a dataset with one class, fewer images than classes, or a model without named stages
    reaching the forward pass (or MLflow) instead of stopping with one line."""
    if card is not None:
        (advisable / "data/raw/small_different/card.json").write_text(card)
    if meta is not None:
        (advisable / "models/pretrain/meta.json").write_text(meta)
    before = tree_digest(advisable, ("data", "models", "reports"))
    argv = ["dataset=small_different"] if card is not None else []
    code, stderr = run_stage_here(advisable, "advise", argv, monkeypatch)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], stderr
    assert tree_digest(advisable, ("data", "models", "reports")) == before
    assert not (advisable / "mlflow.db").exists()
    assert "torch" not in stderr


def test_advise_names_the_missing_dataset(advisable, monkeypatch):
    """Catches: a by-hand `dataset=` that does not exist failing deep inside (a traceback) instead of
    naming the missing folder and the stage that makes it."""
    shutil.rmtree(advisable / "data/raw/small_similar")
    code, stderr = run_stage_here(advisable, "advise", ["dataset=small_similar"], monkeypatch)
    assert code == 2 and "small_similar/card.json not found: run `dvc repro download` first" in stderr, stderr


def test_a_bank_of_another_networks_cases_is_read_and_a_missing_one_refused(advisable, monkeypatch):
    """Catches: a bank whose cases were scored at another network's stages (the shipped bank is small_resnet's;
    a Lite0 run reads it) refused or read as empty, though the vote's descriptors are aggregates over each
    case's own stages; and a missing bank reaching the forward pass instead of stopping with one line."""
    from transferlab.advise import load_bank
    from transferlab.core.artifacts import CaseBank
    from transferlab.core.config import load_config

    bank = advisable / "cases/bank.csv"
    cases = CaseBank.load(bank).cases
    renamed = [
        c.model_copy(update={"stages": {f"block{i}": v for i, v in enumerate(c.stages.values())}}) for c in cases
    ]
    CaseBank(cases=renamed).save(bank)
    monkeypatch.chdir(advisable)
    every_case, usable = load_bank(load_config("advise", [], root=advisable))
    assert every_case == renamed and usable == [c for c in renamed if c.scenario != "builtin"]
    bank.unlink()
    code, stderr = run_stage_here(advisable, "advise", [], monkeypatch)
    assert code == 2 and "cases/bank.csv not found: build it with `python tools/case_bank.py`" in stderr, stderr
    assert not (advisable / "mlflow.db").exists()
