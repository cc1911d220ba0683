"""Stage `report`: the verdict everywhere a user looks.

Reads reports/evaluate/comparison.json (every regime's validation and test metrics over seeds
and each quadrant's winner, chosen on validation), models/cut_sweep/results.json and
models/size_curve/results.json; writes

- reports/metrics.json (DVC metrics, numbers only): per quadrant the winner's test accuracy, the
  winner (its number in the canonical order, see README) and its validation margin, then every
  regime's test acc and macro-F1, mean and std over seeds;
- reports/summary.md: the verdict per quadrant in words, the tables, the figures;
- reports/figures/: the quadrant x regime heatmap, the cut-point curve and the data-size curve;
- reports/comparison.csv, reports/cut_sweep.csv, reports/size_curve.csv, reports/learning_curves.csv:
  for `dvc plots`
  (templates in .dvc/plots/: coloured by regime, one panel per quadrant, chance marked);

and logs the verdict into the pipeline's parent MLflow run (per-quadrant metrics, winner
tags, the summary as its description, the report's files as artifacts). The words are
computed from the numbers, whatever they say; nothing here knows what "should" win.
"""

from __future__ import annotations

from transferlab.core.artifacts import (
    Advice,
    AdviceScores,
    Comparison,
    CutSweepResults,
    MetricsFile,
    PretrainMeta,
    RegimeTestMetrics,
    RuleScore,
    SizeCurveResults,
    Stats,
)
from transferlab.core.config import load_config
from transferlab.core.files import csv_text
from transferlab.core.names import QUADRANTS, REGIMES
from transferlab.core.paths import FIGURES, ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, run_stage
from transferlab.tracking.store import check_store

CutTable = dict[str, dict[str, dict[str, Stats]]]  # quadrant -> cut -> {"val": stats, "test": stats}


def metrics_json(comparison: Comparison, checked: dict | None = None) -> MetricsFile:
    """Numbers only, the headline first: DVC keeps the file's order, so `dvc exp show` (which hides the
    columns that do not fit) shows every quadrant's recommendation before the details. `winner` is the
    recommended regime's number in REGIMES (1 = freeze_all, 2 = truncate_freeze, 3 = finetune_all,
    4 = scratch); `clear` is 1 for a clear winner, 0 for a tie; `diff_*` and `p_better` compare the leader
    with the runner-up on validation; `lr` is the rate each regime ran with (chosen on validation)."""
    out = MetricsFile(
        winner_acc={}, winner={}, clear={}, diff_val={}, diff_low={}, diff_high={}, p_better={}, lr={}, seeds={}
    )
    for quadrant, entry in comparison.items():
        v = entry.verdict
        out.winner_acc[quadrant] = entry.regimes[v.recommended].test["acc"].mean
        out.winner[quadrant] = REGIMES.index(v.recommended) + 1
        out.clear[quadrant] = int(v.call == "clear")
        if v.runner_up is not None:
            r = v.rivals[v.runner_up]
            out.diff_val[quadrant], out.diff_low[quadrant], out.diff_high[quadrant] = r.diff, r.low, r.high
            out.p_better[quadrant] = r.p_better
        out.lr[quadrant] = {regime: s.lr for regime, s in entry.regimes.items() if s.lr is not None}
        out.seeds[quadrant] = {regime: len(s.seeds) for regime, s in entry.regimes.items()}
        out.regimes[quadrant] = {
            regime: RegimeTestMetrics(
                acc=s.test["acc"].mean,
                acc_std=s.test["acc"].std,
                macro_f1=s.test["macro_f1"].mean,
                macro_f1_std=s.test["macro_f1"].std,
                val_acc=s.val.mean,
            )
            for regime, s in entry.regimes.items()
        }
    if len(comparison.budgets) > 1:
        out.budgets = {
            steps: {
                "winner": {q: REGIMES.index(e.verdict.recommended) + 1 for q, e in by_q.items()},
                "winner_acc": {q: e.regimes[e.verdict.recommended].test["acc"].mean for q, e in by_q.items()},
                "clear": {q: int(e.verdict.call == "clear") for q, e in by_q.items()},
            }
            for steps, by_q in comparison.budgets.items()
        }
    if checked:  # last: the headline stays in front for `dvc exp show`
        out.advisor = {
            "hits": sum(r["hit"] for r in checked.values()),
            "mean_regret": _mean_regret(checked),
            **{
                f"spearman_{q}": r["spearman_cut_sweep"]
                for q, r in checked.items()
                if r.get("spearman_cut_sweep") is not None
            },
        }
    return out


def cut_sweep_table(results: CutSweepResults) -> CutTable:
    """{quadrant: {cut: {"val": stats, "test": stats}}} from models/cut_sweep/results.json."""
    from transferlab.analysis.verdict import stats

    table: CutTable = {}
    for quadrant, by_cut in results.quadrants.items():
        table[quadrant] = {}
        for cut, entry in by_cut.items():
            records = list(entry.seeds.values())
            table[quadrant][cut] = {
                "val": stats([r.val_acc for r in records]),
                "test": stats([r.test.acc for r in records if r.test is not None]),
            }
    return table


def _mean_regret(checked: dict) -> float:
    regrets = [r["regret"] for r in checked.values() if r["regret"] is not None]
    return round(sum(regrets) / len(regrets), 6) if regrets else 0.0


def advisor_check(advice: dict[str, Advice], comparison: Comparison, sweep: CutTable) -> dict:
    """Per quadrant, the advice against the measurement (transferlab.analysis.advice.check)."""
    from transferlab.analysis.advice import check

    return {q: check(advice[q], comparison[q], sweep.get(q)) for q in comparison.quadrants if q in advice}


def advisor_markdown(advice: dict[str, Advice], checked: dict, scores: AdviceScores | None = None) -> list[str]:
    if not checked:
        return []
    banked = any(a.bank for a in advice.values())
    lines = [
        "",
        "## The advisor, checked against the measurement",
        "",
        "Before any training, `advise` scored the pretrained network's features (and random ones) at every "
        "stage on each target: LogME, a leave-one-out 5-NN and a linear probe "
        + (
            "(`src/transferlab/analysis/advice.py`); the measured cases of `cases/bank.csv` nearest to the "
            "target picked a regime, with the regret they expect (this experiment's own cases left out). "
            if banked
            else "(`src/transferlab/analysis/advice.py`); with no case bank (`advise.bank: null`), the a-priori "
            "LogME rule picked a regime. "
        )
        + "A **hit** is a pick that is the recommended regime or in the tied set; the **regret** is the "
        "recommended regime's validation accuracy minus the pick's.",
        "",
        "| quadrant | advice | expected regret (hit rate) on its nearest cases | measured: recommended (tied) "
        "| hit | regret | a-priori LogME rule: pick, hit, regret |",
        "|---|---|---|---|---|---|---|",
    ]
    for quadrant, result in checked.items():
        found = advice[quadrant]
        rule = found.recommendation
        pick = rule.regime + (f" at `{rule.cut_at}`" if rule.cut_at else "")
        expected = "-"
        if found.bank:
            expected = f"{found.bank.expected_regret:.3f} ({found.bank.hit_rate:.2f})"
            expected += ", unlike any case in the bank" if found.bank.unlike_bank else ""
        regret = "-" if result["regret"] is None else f"{result['regret']:.3f}"
        a_regret = "-" if result["a_priori_regret"] is None else f"{result['a_priori_regret']:.3f}"
        lines.append(
            f"| {quadrant} | {pick} | {expected} | {result['winner']} ({', '.join(result['tied'])}) "
            f"| {'yes' if result['hit'] else 'no'} | {regret} | {result['a_priori']}, "
            f"{'yes' if result['a_priori_hit'] else 'no'}, {a_regret} |"
        )
    hits = sum(r["hit"] for r in checked.values())
    lines += ["", f"- The pick is a hit on **{hits} of {len(checked)}** quadrants here."]
    for quadrant, result in checked.items():
        if "spearman_cut_sweep" in result:
            rho = result["spearman_cut_sweep"]
            shown = "undefined (a constant series)" if rho is None else f"{rho:.2f}"
            lines.append(
                f"- {quadrant}: Spearman rank correlation between LogME per stage and the cut sweep's "
                f"validation accuracy: **{shown}** (goal: 0.8)."
            )
    lines += bank_scores_markdown(scores)
    lines.append(
        "- The advisor's time against the comparison's is measured in BENCHMARKS.md (wall times are kept out "
        "of this report, a DVC output that must not change when nothing else does)."
    )
    return lines


def bank_scores_markdown(scores: AdviceScores | None) -> list[str]:
    """Every rule on the whole case bank, the bank's own pick held out (reports/advice/scores.json)."""
    if scores is None:
        return []
    lines = [
        "",
        f"Every rule on the case bank ({scores.bank_cases} measured cases, {scores.real_cases} of them on real "
        "images; `cases/README.md`). The bank's pick is scored with the case held out, and, stricter, with "
        "every case of its target (all sizes) held out. Goal on the real cases: hit rate >= 0.75 and mean "
        "regret <= 0.02, better than every baseline.",
        "",
        "| rule | all cases: hit rate | mean regret | worst regret | real cases: hit rate | mean regret "
        "| worst regret |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule, on_all in scores.scores["all"].items():
        real = scores.scores["real"].get(rule)
        cells = [
            f"{on_all.hit_rate:.2f} ({on_all.hits}/{on_all.cases})",
            f"{on_all.mean_regret:.3f}",
            f"{on_all.worst_regret:.3f}",
        ]
        if real and real.cases:
            cells += [
                f"{real.hit_rate:.2f} ({real.hits}/{real.cases})",
                f"{real.mean_regret:.3f}",
                f"{real.worst_regret:.3f}",
            ]
        else:
            cells += ["-", "-", "-"]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += ["", goal_sentence(scores)]
    return lines


def _better(a: RuleScore, b: RuleScore) -> bool:
    """``a`` beats ``b``: no lower hit rate and no higher mean regret, and strictly better on one."""
    no_worse = a.hit_rate >= b.hit_rate and a.mean_regret <= b.mean_regret
    return no_worse and (a.hit_rate > b.hit_rate or a.mean_regret < b.mean_regret)


def goal_sentence(scores: AdviceScores) -> str:
    real = scores.scores["real"]
    strict = real.get("bank, leave its target out")
    if not scores.real_cases or strict is None:
        return "- No real cases in the bank: the goal cannot be judged."
    baselines = {r: s for r, s in real.items() if not r.startswith("bank")}
    beaten = [r for r, s in baselines.items() if _better(strict, s)]
    met = strict.hit_rate >= 0.75 and strict.mean_regret <= 0.02 and len(beaten) == len(baselines)
    closest = max(baselines.values(), key=lambda b: (b.hit_rate, -b.mean_regret))
    return (
        f"- On the real cases, the bank's pick with its target held out hits {strict.hit_rate:.2f} with mean "
        f"regret {strict.mean_regret:.3f}; it beats {len(beaten)} of {len(baselines)} baselines "
        f"({', '.join(beaten) or 'none'}): the goal is **{'met' if met else 'not met'}**. The closest baseline, "
        f"{closest.rule}, hits {closest.hit_rate:.2f} with mean regret {closest.mean_regret:.3f} "
        f"({strict.hit_rate - closest.hit_rate:+.2f} hit rate, {strict.mean_regret - closest.mean_regret:+.3f} "
        f"regret for the bank)."
    )


def lead_text(v) -> str:
    """A verdict's lead over its runner-up with the interval, e.g. "finetune_all − scratch: +0.006 [-0.050,
    +0.061]" (the summary's verdict table and the parent run's note); "-" without a runner-up."""
    r = v.rivals.get(v.runner_up) if v.runner_up else None
    return f"{v.leader} − {v.runner_up}: {r.diff:+.3f} [{r.low:+.3f}, {r.high:+.3f}]" if r else "-"


def _cell(s: Stats) -> str:
    return f"{s.mean:.3f} ± {s.std:.3f}"


def regimes_run(comparison: Comparison) -> list[str]:
    return [r for r in REGIMES if r in next(iter(comparison.quadrants.values())).regimes]


def _flops(value: float) -> str:
    return f"{value / 1e12:.2f} T" if value >= 1e12 else f"{value / 1e9:.1f} G"


def _lr(s) -> str:
    if s.lr is None:
        return "-"
    return f"{s.lr:g}{' ' + s.variant if s.variant else ''}{' (edge)' if s.at_edge else ''}"


def protocol(cfg) -> str:
    tuned = {
        "successive_halving": f"a grid of learning rates (finetune_all also its recipe: discriminative rates or "
        f"the textbook's two phases) searched by successive halving (Optuna; rungs at "
        f"{cfg.tune.min_epochs} epochs x {cfg.tune.reduction_factor}) on seed "
        f"{cfg.tune.seed}, which no compared run uses",
        "grid": f"every point of a grid of learning rates run to the end on seed {cfg.tune.seed}, which no "
        f"compared run uses",
        "off": "no tuning: the learning rates set in params.yaml",
    }[cfg.tune.search]
    budgets = ", ".join(str(b) for b in cfg.budgets)
    return (
        f"Each regime was tuned on every quadrant on validation data first ({tuned}; frozen regimes search "
        f"the whole grid on cached features). Then it trained on seeds {list(cfg.seeds)} at its chosen point, "
        f"with {budgets} optimizer steps per run (batch {cfg.finetune.batch_size}, {cfg.finetune.epochs} "
        f"validated epochs, the best checkpoint kept). Per quadrant the leader (best mean validation "
        f"accuracy) is compared with each rival by a paired bootstrap over seeds and validation images; the "
        f"call is a clear winner when every rival's interval excludes 0 at the call's level (the "
        f"{cfg.compare.level:.0%} level split over the race's looks), else a tie, and the cheapest tied regime "
        f"(training FLOPs) is recommended. While the call is a tie, the tied regimes get more seeds, up to "
        f"{cfg.compare.max_seeds}. The test split is reported for every regime and never used to choose."
    )


def source_network(meta: PretrainMeta | None, pretrain_epochs: int) -> str:
    """One sentence on the network every pretrained regime starts from, with its own accuracy."""
    if meta is None:
        return "The pretrained network: not recorded (models/pretrain/meta.json is missing)."
    name = meta.model.get("name", "the model")
    if meta.source == "imagenet" and meta.weights_package:
        return (
            f"The pretrained network: {name} with ImageNet weights from the package {meta.weights_package} "
            f"({meta.weights_file}, sha256 {meta.weights_sha256}; loaded offline, not measured on a source here)."
        )
    if meta.source == "imagenet":
        return f"The pretrained network: {name} with torchvision's ImageNet weights (not measured on a source here)."
    if meta.source == "file":
        return (
            f"The pretrained network: {name} with your weights from {meta.weights_file} (sha256 "
            f"{(meta.weights_sha256 or '')[:12]}...; not measured on a source here)."
        )
    test = f", {meta.test_acc:.3f} on its test split" if meta.test_acc is not None else ""
    val = f"{meta.val_acc:.3f}" if meta.val_acc is not None else "-"
    classes = len(meta.classes or [])
    return (
        f"The pretrained network: {name} trained here on the source data ({classes} classes, {pretrain_epochs} "
        f"epochs): validation accuracy {val} on the source's validation split{test}. Every pretrained "
        f"regime starts from it; a weak source network shows as pretrained regimes that do not beat scratch."
    )


def did_not_transfer(comparison: Comparison) -> list[str]:
    """Quadrants where no pretrained regime beat scratch (scratch leads, or ties the leader)."""
    lines = []
    for quadrant, entry in comparison.items():
        v = entry.verdict
        if "scratch" not in entry.regimes or len(entry.regimes) < 2:
            continue
        if v.leader == "scratch" or "scratch" in v.tied:
            how = "scratch leads" if v.leader == "scratch" else f"scratch ties the leader {v.leader}"
            lines.append(
                f"- **{quadrant}**: no pretrained regime beat scratch ({how}): the pretrained network did not "
                f"transfer there. Remedies: pretrain longer (`pretrain.epochs`), on a larger or closer source "
                f"(`data.source_train_per_class`, another source dataset), or start from external weights "
                f"(`pretrain.source: imagenet` with `model=efficientnet_lite0`, offline, or `pretrain.source: file`)."
            )
    return lines


def tie_costs(comparison: Comparison) -> list[str]:
    """What a tie's cheaper recommendation gives up: its validation accuracy behind the leader, with the
    interval. A tie at the call's (race-corrected) level can hide a gap whose 95% interval excludes 0."""
    lines = []
    for quadrant, entry in comparison.items():
        v = entry.verdict
        if v.call != "tie" or v.recommended == v.leader or v.recommended not in v.rivals:
            continue
        r = v.rivals[v.recommended]
        lines.append(
            f"- **{quadrant}**: the cheaper `{v.recommended}` is {r.diff:.3f} behind `{v.leader}` on validation "
            f"({v.level:.0%} interval [{r.low:+.3f}, {r.high:+.3f}], P({v.leader} better) = {r.p_better:.2f}); "
            f"tied at the call's {v.call_level:.1%} level. Take `{v.leader}` if that accuracy is worth its cost."
        )
    return ["What a tie's cheaper recommendation gives up against the leader:", "", *lines] if lines else []


def summary_markdown(
    cfg,
    comparison: Comparison,
    sweep: CutTable,
    cuts: list[str],
    advice: dict[str, Advice] | None = None,
    checked: dict | None = None,
    source: PretrainMeta | None = None,
    size: SizeCurveResults | None = None,
    scores: AdviceScores | None = None,
) -> str:
    from transferlab.analysis.verdict import sentence
    from transferlab.core.names import COURSE_NOTE

    regimes = regimes_run(comparison)
    not_transferred = did_not_transfer(comparison)
    lines = [
        "# Which transfer regime should you use? The measured answer",
        "",
        *[f"- {sentence(q, e)}" for q, e in comparison.items()],
        "",
        *([*not_transferred, ""] if not_transferred else []),
        *([*given_up, ""] if (given_up := tie_costs(comparison)) else []),
        protocol(cfg),
        "",
        source_network(source, int(cfg.pretrain.epochs)),
        "",
        f"At {comparison.headline} optimizer steps per run (validation accuracy; the interval is the leader's "
        f"lead over the runner-up at {cfg.compare.level:.0%}):",
        "",
        "| quadrant | call | recommended | its test acc | leader − runner-up | P(leader better) | tied set "
        "| seeds per regime | course note's regime (rank) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for quadrant, entry in comparison.items():
        v = entry.verdict
        r = v.rivals.get(v.runner_up) if v.runner_up else None
        lead = lead_text(v)
        p = f"{r.p_better:.2f}" if r else "-"
        seeds = ", ".join(f"{name} {len(s.seeds)}" for name, s in entry.regimes.items())
        rank = (
            f"{v.course_note} ({v.course_note_rank} of {len(entry.regimes)})"
            if v.course_note_rank
            else f"{v.course_note} (not run)"
        )
        test = _cell(entry.regimes[v.recommended].test["acc"])
        lines.append(
            f"| {quadrant} | {v.call} | **{v.recommended}** | {test} | {lead} | {p} | {', '.join(v.tied)} "
            f"| {seeds} | {rank} |"
        )
    if len(comparison.budgets) > 1:
        lines += [
            "",
            "## The verdict at each budget",
            "",
            "Recommended regime (call) and its validation accuracy, per optimizer steps per run:",
            "",
            "| quadrant | " + " | ".join(f"{b} steps" for b in comparison.budgets) + " |",
            "|---" * (len(comparison.budgets) + 1) + "|",
        ]
        for quadrant in comparison.quadrants:
            cells = []
            for by_q in comparison.budgets.values():
                e = by_q[quadrant]
                val = e.regimes[e.verdict.recommended].val.mean
                cells.append(f"{e.verdict.recommended} ({e.verdict.call}, {val:.3f})")
            lines.append(f"| {quadrant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"![regime matrix]({FIGURES}/regime_matrix.png)",
        "",
        "## Every regime on every quadrant",
        "",
        "Validation (the criterion) / test accuracy, mean ± std over seeds; the learning rate each ran with "
        "(chosen on validation; *edge*: the grid's smallest or largest, the best may lie outside); training "
        "cost in FLOPs. Marked *: the course note's regime; bold: recommended; ⏳: a seed still improving "
        "over the last third of its budget.",
        "",
        "| quadrant | " + " | ".join(regimes) + " |",
        "|---" * (len(regimes) + 1) + "|",
    ]
    for quadrant, entry in comparison.items():
        cells = []
        for regime in regimes:
            s = entry.regimes[regime]
            text = (
                f"{_cell(s.val)} / {_cell(s.test['acc'])}{' *' if COURSE_NOTE[quadrant] == regime else ''}"
                f"{' ⏳' if s.still_improving else ''}<br>lr {_lr(s)}"
                f"{'<br>' + _flops(s.cost.train_flops) + 'FLOPs' if s.cost else ''}"
            )
            cells.append(f"**{text}**" if regime == entry.verdict.recommended else text)
        lines.append(f"| {quadrant} | " + " | ".join(cells) + " |")
    flagged = [(q, r, e.regimes[r]) for q, e in comparison.items() for r in e.verdict.not_converged]
    if flagged:
        lines += [
            "",
            "Not converged (the verdict may change with a larger budget): validation accuracy at two "
            "thirds of the budget and the best after it, per seed still improving:",
            "",
        ]
        for quadrant, regime, s in flagged:
            rises = "; ".join(f"seed {seed}: {a:.3f} -> {b:.3f}" for seed, (a, b) in s.still_improving.items())
            lines.append(f"- {quadrant} / {regime}: {rises}")
    edges = [(q, r, e.regimes[r]) for q, e in comparison.items() for r in e.regimes if e.regimes[r].at_edge]
    if edges:
        lines += [
            "",
            "Chosen at the edge of the grid (widen `search.lr` in conf/regime/<name>.yaml): "
            + "; ".join(f"{q} / {r}: lr {s.lr:g}" for q, r, s in edges)
            + ".",
        ]
    lines += [
        "",
        "Test macro-F1, mean ± std:",
        "",
        "| quadrant | " + " | ".join(regimes) + " |",
        "|---" * (len(regimes) + 1) + "|",
    ]
    for quadrant, entry in comparison.items():
        lines.append(f"| {quadrant} | " + " | ".join(_cell(entry.regimes[r].test["macro_f1"]) for r in regimes) + " |")
    if sweep:
        lines += [
            "",
            "## Cut-point sweep (truncate_freeze)",
            "",
            "Validation / test accuracy, mean ± std over seeds, keeping the pretrained stages up to each cut "
            "(at the rate set in params.yaml: the sweep is not tuned).",
            "",
            "| quadrant | " + " | ".join(cuts) + " |",
            "|---" * (len(cuts) + 1) + "|",
        ]
        for quadrant, by_cut in sweep.items():
            lines.append(
                f"| {quadrant} | "
                + " | ".join(f"{_cell(by_cut[c]['val'])} / {_cell(by_cut[c]['test'])}" for c in cuts)
                + " |"
            )
        lines.append("")
        for quadrant, by_cut in sweep.items():
            best = max(cuts, key=lambda c: by_cut[c]["val"].mean)
            lines.append(
                f"- **{quadrant}**: the best cut on validation is `{best}` (test "
                f"{_cell(by_cut[best]['test'])}); keeping every stage (`{cuts[-1]}`) gives test "
                f"{_cell(by_cut[cuts[-1]]['test'])}."
            )
        lines += ["", f"![cut-point sweep]({FIGURES}/cut_sweep.png)"]
    if size is not None:
        lines += size_curve_markdown(cfg, size)
    lines += advisor_markdown(advice or {}, checked or {}, scores)
    lines += [
        "",
        "Confusion matrices of the recommended regimes: "
        + ", ".join(f"[{q}](evaluate/{q}/confusion.png)" for q in comparison.quadrants),
        "",
    ]
    return "\n".join(lines)


def size_curve_markdown(cfg, size: SizeCurveResults) -> list[str]:
    """The data-size curve: a table per quadrant, the best regime at each size and every crossover; when the
    stage was off, how to turn it on."""
    from transferlab.analysis.size_curve import curves, summary_lines

    sizes = ", ".join("all" if n is None else str(n) for n in cfg.size_curve.per_class)
    lines = ["", "## Would more labels change the answer? The data-size curve", ""]
    if not size.run:
        return lines + [
            f"Not measured: the `size_curve` stage is off (`size_curve.run: false`). `dvc exp run -S "
            f"size_curve.run=true` trains every regime on {sizes} images per class of "
            f"{', '.join(cfg.size_curve.quadrants)}; docs/size_curve.md has what it found here and how long it took."
        ]
    table = curves(size)
    lines += [
        f"Every regime on the first N training images of each class (nested subsets), seeds {list(cfg.seeds)}, "
        f"{size.steps} optimizer steps per run, each at the recipe its search chose on the quadrant of the same "
        f"target nearest in size (log scale; not searched again per size); the full split is the comparison's own "
        f"runs. Validation / test accuracy, mean ± std over seeds; crossovers are read on validation means. At the "
        f"full split the curve has the `finetune` stage's seeds only, not the extra seeds `race` gives a tie, so it "
        f"can order two close regimes differently from the verdict.",
    ]
    for quadrant, curve in table.items():
        regimes = list(curve)
        lines += [
            "",
            f"{quadrant}:",
            "",
            "| per class | " + " | ".join(regimes) + " |",
            "|---" * (len(regimes) + 1) + "|",
        ]
        for i, point in enumerate(curve[regimes[0]]):
            cells = [f"{_cell(curve[r][i].val)} / {_cell(curve[r][i].test)}" for r in regimes]
            lines.append(
                f"| {point.per_class}{' (all)' if point.from_comparison else ''} | " + " | ".join(cells) + " |"
            )
    lines.append("")
    for quadrant, curve in table.items():
        lines += summary_lines(quadrant, curve)
    lines += ["", f"![data-size curve]({FIGURES}/size_curve.png)"]
    return lines


def size_curve_csv(size: SizeCurveResults, comparison: Comparison) -> str:
    """Every regime's validation and test accuracy at every size (long format: one row per split), for `dvc
    plots` (template .dvc/plots/size_curve.json); ``crossover``, on a validation row: the regimes it has just
    overtaken. The header only when the stage was off."""
    from transferlab.analysis.size_curve import crossovers, curves

    rows = []
    for quadrant, curve in curves(size).items():
        crossing = crossovers(curve)
        for regime, points in curve.items():
            for p in points:
                overtakes = "; ".join(
                    f"overtakes {c.behind} (between {c.below} and {c.above})"
                    for c in crossing
                    if c.ahead == regime and c.above == p.per_class
                )
                for split, s in (("val", p.val), ("test", p.test)):
                    rows.append(
                        [
                            quadrant,
                            regime,
                            p.per_class,
                            split,
                            s.mean,
                            s.std,
                            s.n,
                            p.tuned_on,
                            overtakes if split == "val" else "",
                            _chance(comparison[quadrant]),
                        ]
                    )
    columns = ["quadrant", "regime", "per_class", "split", "value", "std", "seeds", "tuned_on", "crossover", "chance"]
    return csv_text(columns, rows)


def _chance(entry) -> float:
    return round(1 / entry.num_classes, 6)


def comparison_csv(comparison: Comparison) -> str:
    """Every regime on every quadrant at every budget, for `dvc plots` (template .dvc/plots/regimes.json)."""
    from transferlab.core.names import COURSE_NOTE

    columns = [
        "steps",
        "quadrant",
        "regime",
        "role",
        "course_note",
        "val_acc",
        "val_low",
        "val_high",
        "test_acc",
        "test_acc_std",
        "low",
        "high",
        "lr",
        "seeds",
        "not_converged",
        "chance",
    ]
    rows = []
    for steps, by_q in comparison.budgets.items():
        for quadrant, entry in by_q.items():
            v = entry.verdict
            for regime, s in entry.regimes.items():
                acc = s.test["acc"]
                role = "recommended" if regime == v.recommended else "tied" if regime in v.tied else "other"
                rows.append(
                    [
                        steps,
                        quadrant,
                        regime,
                        role,
                        "prescribed" if COURSE_NOTE[quadrant] == regime else "",
                        s.val.mean,
                        s.val_low,
                        s.val_high,
                        acc.mean,
                        acc.std,
                        round(acc.mean - acc.std, 6),
                        round(acc.mean + acc.std, 6),
                        "" if s.lr is None else s.lr,
                        len(s.seeds),
                        int(bool(s.still_improving)),
                        _chance(entry),
                    ]
                )
    return csv_text(columns, rows)


def learning_curves_csv(comparison: Comparison, where: ProjectPaths) -> str:
    """train/acc and val/acc per epoch (mean over seeds) of every regime on every quadrant and budget, named
    as in MLflow, for `dvc plots` (template .dvc/plots/learning_curves.json)."""
    import csv

    rows = []
    for quadrant, entry in comparison.items():
        for regime in entry.regimes:
            with open(where.regime_history(regime, quadrant), newline="") as handle:
                history = list(csv.DictReader(handle))
            for steps in comparison.budgets:
                mine = [row for row in history if row.get("steps") == steps]
                improving = int(bool(comparison.budgets[steps][quadrant].regimes[regime].still_improving))
                for metric, column in (("train/acc", "train_acc"), ("val/acc", "val_acc")):
                    by_epoch: dict[int, list[float]] = {}
                    for row in mine:
                        if row.get(column):
                            by_epoch.setdefault(int(row["epoch"]), []).append(float(row[column]))
                    for epoch, values in sorted(by_epoch.items()):
                        rows.append(
                            [
                                steps,
                                quadrant,
                                regime,
                                metric,
                                epoch,
                                round(sum(values) / len(values), 6),
                                improving,
                                _chance(entry),
                            ]
                        )
    return csv_text(["steps", "quadrant", "regime", "metric", "epoch", "value", "not_converged", "chance"], rows)


def cut_sweep_csv(sweep: CutTable, cuts: list[str], comparison: Comparison) -> str:
    rows = []
    for quadrant, by_cut in sweep.items():
        for depth, cut in enumerate(cuts, start=1):
            s = by_cut[cut]
            rows.append(
                [quadrant, cut, depth, s["val"].mean, s["test"].mean, s["test"].std, _chance(comparison[quadrant])]
            )
    return csv_text(["quadrant", "cut_at", "depth", "val_acc", "test_acc", "test_acc_std", "chance"], rows)


# MLflow keeps a tag value up to 8,000 characters and cuts the rest: the parent run's description is a short
# note that fits whole (the full summary, 11,808 characters on the committed run, was cut mid-word).
NOTE_LIMIT = 5000


def parent_note(comparison: Comparison, source_line: str) -> str:
    """The parent run's description (``mlflow.note.content``): per quadrant the call, the recommendation, its
    accuracy, the lead with its interval and the cost, then where the whole report is. No image links (the
    UI cannot resolve an artifact's relative path in a note); ``<`` and ``>`` escaped (the UI renders HTML)."""
    import html

    from transferlab.analysis.verdict import leakage_warning

    lines = [
        "# Which transfer regime should you use?",
        "",
        "Chosen per quadrant on validation data; the test split is only reported. The whole report, with its "
        "figures, is in this run's Artifacts tab: `report/summary.md`, `report/figures/`.",
        "",
        "| quadrant | call | recommended | val / test acc | leader − runner-up [95% interval] | training cost |",
        "|---|---|---|---|---|---|",
    ]
    for quadrant, entry in comparison.items():
        v = entry.verdict
        best = entry.regimes[v.recommended]
        lead = lead_text(v)
        cost = f"{best.cost.train_flops / 1e9:.1f} GFLOPs" if best.cost else "-"
        lines.append(
            f"| {quadrant} | {v.call} | **{v.recommended}** | {best.val.mean:.3f} / {best.test['acc'].mean:.3f} "
            f"| {lead} | {cost} |"
        )
    lines += ["", *[f"- {quadrant}: {entry.verdict.reason}" for quadrant, entry in comparison.items()]]
    warned = [f"- {q}: {leakage_warning(e.near_copies)}." for q, e in comparison.items() if e.near_copies]
    lines += ["", *warned] if warned else []
    lines += ["", source_line]
    note = html.escape("\n".join(lines), quote=False)
    if len(note) > NOTE_LIMIT:  # many quadrants: the table stays, the sentences go (they are in the summary)
        kept = lines[: 6 + len(comparison.quadrants)] + (["", *warned] if warned else [])
        note = html.escape("\n".join(kept + ["", source_line]), quote=False)
    return note[:NOTE_LIMIT]


def log_verdict(
    cfg, comparison: Comparison, where: ProjectPaths, checked: dict, source: PretrainMeta | None = None
) -> str | None:
    """The verdict on the pipeline's parent run: metrics per quadrant, winner tags, description, files."""
    from transferlab.core.config import flatten
    from transferlab.tracking import runs

    pipeline = runs.open_pipeline(cfg)
    parent = pipeline.run_id
    if parent is None:
        return None
    source_line = source_network(source, int(cfg.pretrain.epochs))
    metrics, tags, params = {}, {"mlflow.note.content": parent_note(comparison, source_line)}, {}
    if source is not None:
        tags["source_network"] = source.source
        for split, acc in (("val_acc", source.val_acc), ("test_acc", source.test_acc)):
            if acc is not None:
                metrics[f"source/{split}"] = acc
    for quadrant, entry in comparison.items():
        v = entry.verdict
        best = entry.regimes[v.recommended]
        metrics[f"{quadrant}/test_acc"] = best.test["acc"].mean
        metrics[f"{quadrant}/test_macro_f1"] = best.test["macro_f1"].mean
        metrics[f"{quadrant}/val_acc"] = best.val.mean
        if v.runner_up is not None:
            r = v.rivals[v.runner_up]
            metrics.update(
                {
                    f"{quadrant}/diff_val": r.diff,
                    f"{quadrant}/diff_low": r.low,
                    f"{quadrant}/diff_high": r.high,
                    f"{quadrant}/p_better": r.p_better,
                }
            )
        if best.cost is not None:
            metrics.update(
                {
                    f"{quadrant}/cost_train_flops": best.cost.train_flops,
                    f"{quadrant}/cost_inference_flops": best.cost.inference_flops,
                    f"{quadrant}/cost_trainable_params": best.cost.trainable_params,
                }
            )
        tags.update(
            {
                f"{quadrant}.recommended": v.recommended,
                f"{quadrant}.call": v.call,
                f"{quadrant}.tied": ",".join(v.tied),
                f"{quadrant}.reason": v.reason,
                f"{quadrant}.course_note_rank": str(v.course_note_rank),
            }
        )
        if entry.near_copies:
            tags[f"{quadrant}.leakage_warning"] = f"{entry.near_copies} near-copies across its splits left out"
        for regime, s in entry.regimes.items():
            if s.lr is not None:
                params[f"chosen_lr.{quadrant}.{regime}"] = s.lr
            if s.variant:
                params[f"chosen_recipe.{quadrant}.{regime}"] = s.variant
            metrics[f"{quadrant}/seeds/{regime}"] = len(s.seeds)
    for steps, by_q in comparison.budgets.items():
        for quadrant, entry in by_q.items():
            metrics[f"budget_{steps}/{quadrant}/recommended"] = REGIMES.index(entry.verdict.recommended) + 1
            metrics[f"budget_{steps}/{quadrant}/clear"] = int(entry.verdict.call == "clear")
    if checked:
        metrics["advisor/hits"] = sum(r["hit"] for r in checked.values())
        metrics["advisor/mean_regret"] = _mean_regret(checked)
        metrics.update(
            {
                f"advisor/spearman_{q}": r["spearman_cut_sweep"]
                for q, r in checked.items()
                if r.get("spearman_cut_sweep") is not None
            }
        )
    runs.log_metrics(parent, metrics)
    runs.set_tags(parent, tags)
    runs.log_params(parent, params)
    from omegaconf import OmegaConf

    params = flatten(OmegaConf.load(where.root / "params.yaml"))
    existing = runs.client().get_run(parent).data.params
    new = {k: v for k, v in params.items() if k not in existing}
    if new:
        from mlflow.entities import Param

        runs.with_retry(
            lambda: runs.client().log_batch(
                parent, params=[Param(k, runs._param_value(v)) for k, v in sorted(new.items())]
            )
        )
    runs.log_artifact(parent, where.summary, "report")
    runs.log_artifact(parent, where.metrics, "report")
    for figure in sorted(where.figures.glob("*.png")):
        runs.log_artifact(parent, figure, f"report/{FIGURES}")
    for quadrant in comparison.quadrants:
        runs.log_artifact(parent, where.evaluation / quadrant / "confusion.png", f"report/evaluate/{quadrant}")
    for preview in sorted(where.augment_previews().glob("*.png")):
        runs.log_artifact(parent, preview, "report/augment")
    runs.tag_dvc_inputs(parent)
    return parent


def main(argv: list[str]) -> None:
    cfg = load_config("report", argv)
    where = ProjectPaths.of(cfg)
    with prepared(
        "report",
        {
            where.comparison: "evaluate",
            where.cut_sweep_results: "cut_sweep",
            where.size_curve_results: "size_curve",
            where.advice: "advise",
        },
        [where.metrics, where.figures],
        check_store,
    ):
        with heavy_imports():
            from rich.console import Console

            from transferlab.analysis import figures
            from transferlab.analysis.verdict import sentence
            from transferlab.core.config import save_config
            from transferlab.core.files import staged_dir, write_text
        found = Comparison.load(where.comparison)
        comparison = Comparison(
            headline=found.headline,
            budgets={steps: {q: by_q[q] for q in QUADRANTS} for steps, by_q in found.budgets.items()},
        )
        sweep_results = CutSweepResults.load(where.cut_sweep_results)
        cuts = list(sweep_results.cut_at)
        sweep = cut_sweep_table(sweep_results)
        advice = {q: Advice.load(where.advice_file(q)) for q in QUADRANTS if where.advice_file(q).is_file()}
        checked = advisor_check(advice, comparison, sweep)
        source = PretrainMeta.load(where.pretrain_meta) if where.pretrain_meta.is_file() else None
        size = SizeCurveResults.load(where.size_curve_results)
        scores = AdviceScores.load(where.advice_scores) if where.advice_scores.is_file() else None
        summary = summary_markdown(cfg, comparison, sweep, cuts, advice, checked, source, size, scores)
        with staged_dir(where.figures) as staging:
            figures.heatmap(comparison, regimes_run(comparison), staging / "regime_matrix.png")
            if sweep:
                figures.cut_curve(sweep, cuts, staging / "cut_sweep.png")
            if size.run:
                from transferlab.analysis.size_curve import crossovers, curves

                table = curves(size)
                figures.size_curve(
                    table,
                    {q: crossovers(c) for q, c in table.items()},
                    {q: _chance(comparison[q]) for q in table},
                    staging / "size_curve.png",
                )
        metrics_json(comparison, checked).save(where.metrics)
        write_text(where.summary, summary)
        write_text(where.reports / "comparison.csv", comparison_csv(comparison))
        write_text(where.reports / "cut_sweep.csv", cut_sweep_csv(sweep, cuts, comparison))
        write_text(where.reports / "size_curve.csv", size_curve_csv(size, comparison))
        write_text(where.reports / "learning_curves.csv", learning_curves_csv(comparison, where))
        save_config(cfg, where.reports / "report_config.yaml")
        parent = log_verdict(cfg, comparison, where, checked, source)
        console = Console(soft_wrap=True)
        for quadrant, entry in comparison.items():
            console.print(sentence(quadrant, entry).replace("**", "").replace("`", ""))
        if parent:
            console.print(f"verdict logged to the pipeline's parent MLflow run {parent}")


if __name__ == "__main__":
    run_stage("report", main)
