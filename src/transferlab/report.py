"""Stage `report`: the verdict everywhere a user looks.

Reads reports/evaluate/comparison.json (every regime's validation and test metrics over seeds
and each quadrant's winner, chosen on validation) and models/cut_sweep/results.json; writes

- reports/metrics.json (DVC metrics, numbers only): per quadrant the winner's test accuracy, the
  winner (its number in the canonical order, see README) and its validation margin, then every
  regime's test acc and macro-F1, mean and std over seeds;
- reports/summary.md: the verdict per quadrant in words, the tables, the figures;
- reports/figures/: the quadrant x regime heatmap and the cut-point curve;
- reports/comparison.csv, reports/cut_sweep.csv, reports/learning_curves.csv: for `dvc plots`
  (templates in .dvc/plots/: coloured by regime, one panel per quadrant, chance marked);

and logs the verdict into the pipeline's parent MLflow run (per-quadrant metrics, winner
tags, the summary as its description, the report's files as artifacts). The words are
computed from the numbers, whatever they say; nothing here knows what "should" win.
"""

from __future__ import annotations

from transferlab.core.artifacts import Advice, Comparison, CutSweepResults, MetricsFile, RegimeTestMetrics, Stats
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
    columns that do not fit) shows every quadrant's winner accuracy before the details. `winner` is the
    winning regime's number in REGIMES (1 = freeze_all, 2 = truncate_freeze, 3 = finetune_all, 4 = scratch)."""
    out = MetricsFile(winner_acc={}, winner={}, margin_val={})
    for quadrant, entry in comparison.quadrants.items():
        v = entry.verdict
        out.winner_acc[quadrant] = v.winner_test["acc"].mean
        out.winner[quadrant] = REGIMES.index(v.winner) + 1
        if v.runner_up and v.margin_val is not None:
            out.margin_val[quadrant] = v.margin_val
        out.regimes[quadrant] = {
            regime: RegimeTestMetrics(
                acc=s.test["acc"].mean,
                acc_std=s.test["acc"].std,
                macro_f1=s.test["macro_f1"].mean,
                macro_f1_std=s.test["macro_f1"].std,
            )
            for regime, s in entry.regimes.items()
        }
    if checked:  # last: the headline stays in front for `dvc exp show`
        out.advisor = {
            "hits": sum(r["is_winner"] or r["within_one_std"] for r in checked.values()),
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
                "test": stats([r.test.acc for r in records]),
            }
    return table


def advisor_check(advice: dict[str, Advice], comparison: Comparison, sweep: CutTable) -> dict:
    """Per quadrant, the advice against the measurement (transferlab.analysis.advice.check)."""
    from transferlab.analysis.advice import check

    return {q: check(advice[q], comparison[q], sweep.get(q)) for q in comparison.quadrants if q in advice}


def advisor_markdown(advice: dict[str, Advice], checked: dict) -> list[str]:
    if not checked:
        return []
    lines = [
        "",
        "## The advisor, checked against the measurement",
        "",
        "Before any training, `advise` scored the pretrained network's features at every stage on each target "
        "(LogME; a rule stated a priori, see `src/transferlab/analysis/advice.py`) and picked a regime. "
        "Here is its pick beside the measured winner (validation accuracy, the criterion).",
        "",
        "| quadrant | advice | measured winner | pick's validation gap | within 1 std | why |",
        "|---|---|---|---|---|---|",
    ]
    for quadrant, result in checked.items():
        rule = advice[quadrant].recommendation
        pick = rule.regime + (f" at `{rule.cut_at}`" if rule.cut_at else "")
        gap = "-" if result["gap_val"] is None else f"{result['gap_val']:.3f}"
        within = "yes" if result["is_winner"] or result["within_one_std"] else "no"
        lines.append(f"| {quadrant} | {pick} | {result['winner']} | {gap} | {within} | {rule.reason} |")
    hits = sum(r["is_winner"] or r["within_one_std"] for r in checked.values())
    lines += [
        "",
        f"- The pick is the winner or within one standard deviation of it on **{hits} of {len(checked)}** "
        f"quadrants (goal: 3 of 4).",
    ]
    for quadrant, result in checked.items():
        if "spearman_cut_sweep" in result:
            rho = result["spearman_cut_sweep"]
            shown = "undefined (a constant series)" if rho is None else f"{rho:.2f}"
            lines.append(
                f"- {quadrant}: Spearman rank correlation between LogME per stage and the cut sweep's "
                f"validation accuracy: **{shown}** (goal: 0.8)."
            )
    lines.append(
        "- The advisor's time against the comparison's is measured in BENCHMARKS.md (wall times are kept out "
        "of this report, a DVC output that must not change when nothing else does)."
    )
    return lines


def _cell(s: Stats) -> str:
    return f"{s.mean:.3f} ± {s.std:.3f}"


def regimes_run(comparison: Comparison) -> list[str]:
    return [r for r in REGIMES if r in next(iter(comparison.quadrants.values())).regimes]


def summary_markdown(
    cfg,
    comparison: Comparison,
    sweep: CutTable,
    cuts: list[str],
    advice: dict[str, Advice] | None = None,
    checked: dict | None = None,
) -> str:
    from transferlab.analysis.verdict import sentence
    from transferlab.core.names import COURSE_NOTE

    regimes = regimes_run(comparison)
    lines = [
        "# Which transfer regime wins? The measured answer",
        "",
        f"Every regime in `regimes` trained on every quadrant, once per seed {list(cfg.seeds)}, each with the same "
        f"budget ({cfg.finetune.steps} optimizer steps, batch {cfg.finetune.batch_size}, its own learning rate). "
        f"The winner of a quadrant is the regime with the best **mean validation accuracy**; the test split is "
        f"reported for every regime and never used to choose.",
        "",
        "| quadrant | winner (validation) | its test acc | runner-up | validation margin | seeds won "
        "| within 1 std | course note's regime (rank) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for quadrant, entry in comparison.items():
        v = entry.verdict
        runner = v.runner_up or "-"
        margin = f"{v.margin_val:.3f}" if v.runner_up else "-"
        won = f"{v.seeds_won} of {v.seeds_compared}" if v.runner_up else "-"
        within = ("yes" if v.within_one_std else "no") if v.runner_up else "-"
        rank = (
            f"{v.course_note} ({v.course_note_rank} of {len(entry.regimes)})"
            if v.course_note_rank
            else f"{v.course_note} (not run)"
        )
        lines.append(
            f"| {quadrant} | **{v.winner}** | {_cell(v.winner_test['acc'])} | {runner} | {margin} "
            f"| {won} | {within} | {rank} |"
        )
    lines += [
        "",
        *[f"- {sentence(q, e)}" for q, e in comparison.items()],
        "",
        f"![regime matrix]({FIGURES}/regime_matrix.png)",
        "",
        "## Every regime on every quadrant",
        "",
        "Validation accuracy (the criterion) / test accuracy, mean ± std over seeds. "
        "Marked *: the course note's regime; bold: the winner.",
        "",
        "| quadrant | " + " | ".join(regimes) + " |",
        "|---" * (len(regimes) + 1) + "|",
    ]
    for quadrant, entry in comparison.items():
        cells = []
        for regime in regimes:
            s = entry.regimes[regime]
            text = f"{_cell(s.val)} / {_cell(s.test['acc'])}{' *' if COURSE_NOTE[quadrant] == regime else ''}"
            cells.append(f"**{text}**" if regime == entry.verdict.winner else text)
        lines.append(f"| {quadrant} | " + " | ".join(cells) + " |")
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
            "Validation / test accuracy, mean ± std over seeds, keeping the pretrained stages up to each cut.",
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
                f"- **{quadrant}**: the best cut on validation is `{best}` (test {_cell(by_cut[best]['test'])});"
                f" keeping every stage (`{cuts[-1]}`) gives test {_cell(by_cut[cuts[-1]]['test'])}."
            )
        lines += ["", f"![cut-point sweep]({FIGURES}/cut_sweep.png)"]
    lines += advisor_markdown(advice or {}, checked or {})
    lines += [
        "",
        "Confusion matrices of the winners: "
        + ", ".join(f"[{q}](evaluate/{q}/confusion.png)" for q in comparison.quadrants),
        "",
    ]
    return "\n".join(lines)


def _chance(entry) -> float:
    return round(1 / entry.num_classes, 6)


def comparison_csv(comparison: Comparison) -> str:
    """Every regime on every quadrant, for `dvc plots` (template .dvc/plots/regimes.json)."""
    from transferlab.core.names import COURSE_NOTE

    columns = [
        "quadrant",
        "regime",
        "role",
        "course_note",
        "test_acc",
        "test_acc_std",
        "low",
        "high",
        "val_acc",
        "chance",
    ]
    rows = []
    for quadrant, entry in comparison.items():
        for regime, s in entry.regimes.items():
            acc = s.test["acc"]
            role = "winner" if regime == entry.verdict.winner else "other"
            note = "prescribed" if COURSE_NOTE[quadrant] == regime else ""
            rows.append(
                [
                    quadrant,
                    regime,
                    role,
                    note,
                    acc.mean,
                    acc.std,
                    round(acc.mean - acc.std, 6),
                    round(acc.mean + acc.std, 6),
                    s.val.mean,
                    _chance(entry),
                ]
            )
    return csv_text(columns, rows)


def learning_curves_csv(comparison: Comparison, where: ProjectPaths) -> str:
    """train/acc and val/acc per epoch (mean over seeds) of every regime on every quadrant, named as in
    MLflow, for `dvc plots` (template .dvc/plots/learning_curves.json)."""
    import csv

    rows = []
    for quadrant, entry in comparison.items():
        for regime in entry.regimes:
            with open(where.regime_history(regime, quadrant), newline="") as handle:
                history = list(csv.DictReader(handle))
            for metric, column in (("train/acc", "train_acc"), ("val/acc", "val_acc")):
                by_epoch: dict[int, list[float]] = {}
                for row in history:
                    if row.get(column):
                        by_epoch.setdefault(int(row["epoch"]), []).append(float(row[column]))
                for epoch, values in sorted(by_epoch.items()):
                    rows.append([quadrant, regime, metric, epoch, round(sum(values) / len(values), 6), _chance(entry)])
    return csv_text(["quadrant", "regime", "metric", "epoch", "value", "chance"], rows)


def cut_sweep_csv(sweep: CutTable, cuts: list[str], comparison: Comparison) -> str:
    rows = []
    for quadrant, by_cut in sweep.items():
        for depth, cut in enumerate(cuts, start=1):
            s = by_cut[cut]
            rows.append(
                [quadrant, cut, depth, s["val"].mean, s["test"].mean, s["test"].std, _chance(comparison[quadrant])]
            )
    return csv_text(["quadrant", "cut_at", "depth", "val_acc", "test_acc", "test_acc_std", "chance"], rows)


def log_verdict(cfg, comparison: Comparison, where: ProjectPaths, summary: str, checked: dict) -> str | None:
    """The verdict on the pipeline's parent run: metrics per quadrant, winner tags, description, files."""
    from transferlab.core.config import flatten
    from transferlab.tracking import runs

    pipeline = runs.open_pipeline(cfg)
    parent = pipeline.run_id
    if parent is None:
        return None
    metrics, tags = {}, {"mlflow.note.content": summary}
    for quadrant, entry in comparison.items():
        v = entry.verdict
        metrics[f"{quadrant}/test_acc"] = v.winner_test["acc"].mean
        metrics[f"{quadrant}/test_macro_f1"] = v.winner_test["macro_f1"].mean
        metrics[f"{quadrant}/val_acc"] = v.winner_val.mean
        if v.runner_up and v.margin_val is not None:
            metrics[f"{quadrant}/margin_val"] = v.margin_val
        tags[f"{quadrant}.winner"] = v.winner
        tags[f"{quadrant}.course_note_rank"] = str(v.course_note_rank)
    if checked:
        metrics["advisor/hits"] = sum(r["is_winner"] or r["within_one_std"] for r in checked.values())
        metrics.update(
            {
                f"advisor/spearman_{q}": r["spearman_cut_sweep"]
                for q, r in checked.items()
                if r.get("spearman_cut_sweep") is not None
            }
        )
    runs.log_metrics(parent, metrics)
    runs.set_tags(parent, tags)
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
        {where.comparison: "evaluate", where.cut_sweep_results: "cut_sweep", where.advice: "advise"},
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
        comparison = Comparison(quadrants={q: found[q] for q in QUADRANTS})
        sweep_results = CutSweepResults.load(where.cut_sweep_results)
        cuts = list(sweep_results.cut_at)
        sweep = cut_sweep_table(sweep_results)
        advice = {q: Advice.load(where.advice_file(q)) for q in QUADRANTS if where.advice_file(q).is_file()}
        checked = advisor_check(advice, comparison, sweep)
        summary = summary_markdown(cfg, comparison, sweep, cuts, advice, checked)
        with staged_dir(where.figures) as staging:
            figures.heatmap(comparison, regimes_run(comparison), staging / "regime_matrix.png")
            if sweep:
                figures.cut_curve(sweep, cuts, staging / "cut_sweep.png")
        metrics_json(comparison, checked).save(where.metrics)
        write_text(where.summary, summary)
        write_text(where.reports / "comparison.csv", comparison_csv(comparison))
        write_text(where.reports / "cut_sweep.csv", cut_sweep_csv(sweep, cuts, comparison))
        write_text(where.reports / "learning_curves.csv", learning_curves_csv(comparison, where))
        save_config(cfg, where.reports / "report_config.yaml")
        parent = log_verdict(cfg, comparison, where, summary, checked)
        console = Console(soft_wrap=True)
        for quadrant, entry in comparison.items():
            console.print(sentence(quadrant, entry).replace("**", "").replace("`", ""))
        if parent:
            console.print(f"verdict logged to the pipeline's parent MLflow run {parent}")


if __name__ == "__main__":
    run_stage("report", main)
