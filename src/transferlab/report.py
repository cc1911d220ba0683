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

import json
from pathlib import Path

from transferlab.core.config import load_config, paths
from transferlab.core.names import QUADRANTS, REGIMES
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, run_stage
from transferlab.tracking.store import check_store

METRICS_FILE = "metrics.json"
FIGURES = "figures"


def metrics_json(comparison: dict, checked: dict | None = None) -> dict:
    """Numbers only, the headline first: DVC keeps the file's order, so `dvc exp show` (which hides the
    columns that do not fit) shows every quadrant's winner accuracy before the details. `winner` is the
    winning regime's number in REGIMES (1 = freeze_all, 2 = truncate_freeze, 3 = finetune_all, 4 = scratch)."""
    out: dict = {"winner_acc": {}, "winner": {}, "margin_val": {}}
    for quadrant, entry in comparison.items():
        v = entry["verdict"]
        out["winner_acc"][quadrant] = v["winner_test"]["acc"]["mean"]
        out["winner"][quadrant] = REGIMES.index(v["winner"]) + 1
        if v["runner_up"]:
            out["margin_val"][quadrant] = v["margin_val"]
    for quadrant, entry in comparison.items():
        out[quadrant] = {regime: {"acc": s["test"]["acc"]["mean"], "acc_std": s["test"]["acc"]["std"],
                                  "macro_f1": s["test"]["macro_f1"]["mean"],
                                  "macro_f1_std": s["test"]["macro_f1"]["std"]}
                         for regime, s in entry["regimes"].items()}
    if checked:  # last: the headline stays in front for `dvc exp show`
        out["advisor"] = {"hits": sum(r["is_winner"] or r["within_one_std"] for r in checked.values()),
                          **{f"spearman_{q}": r["spearman_cut_sweep"] for q, r in checked.items()
                             if r.get("spearman_cut_sweep") is not None}}
    return out


def cut_sweep_table(results: dict) -> dict:
    """{quadrant: {cut: {"val": stats, "test": stats}}} from models/cut_sweep/results.json."""
    from transferlab.analysis.verdict import stats

    table = {}
    for quadrant, by_cut in results["quadrants"].items():
        table[quadrant] = {}
        for cut, entry in by_cut.items():
            runs = list(entry["seeds"].values())
            table[quadrant][cut] = {"val": stats([r["val_acc"] for r in runs]),
                                    "test": stats([r["test"]["acc"] for r in runs])}
    return table


def advisor_check(advice: dict, comparison: dict, sweep: dict) -> dict:
    """Per quadrant, the advice against the measurement (transferlab.analysis.advice.check)."""
    from transferlab.analysis.advice import check

    return {q: check(advice[q], comparison[q], sweep.get(q)) for q in comparison if q in advice}


def advisor_markdown(advice: dict, checked: dict) -> list[str]:
    if not checked:
        return []
    lines = ["", "## The advisor, checked against the measurement", "",
             "Before any training, `advise` scored the pretrained network's features at every stage on each target "
             "(LogME; a rule stated a priori, see `src/transferlab/analysis/advice.py`) and picked a regime. "
             "Here is its pick beside the measured winner (validation accuracy, the criterion).", "",
             "| quadrant | advice | measured winner | pick's validation gap | within 1 std | why |",
             "|---|---|---|---|---|---|"]
    for quadrant, result in checked.items():
        rule = advice[quadrant]["recommendation"]
        pick = rule["regime"] + (f" at `{rule['cut_at']}`" if rule["cut_at"] else "")
        gap = "-" if result["gap_val"] is None else f"{result['gap_val']:.3f}"
        within = "yes" if result["is_winner"] or result["within_one_std"] else "no"
        lines.append(f"| {quadrant} | {pick} | {result['winner']} | {gap} | {within} | {rule['reason']} |")
    hits = sum(r["is_winner"] or r["within_one_std"] for r in checked.values())
    lines += ["", f"- The pick is the winner or within one standard deviation of it on **{hits} of {len(checked)}** "
                  f"quadrants (goal: 3 of 4)."]
    for quadrant, result in checked.items():
        if "spearman_cut_sweep" in result:
            rho = result["spearman_cut_sweep"]
            shown = "undefined (a constant series)" if rho is None else f"{rho:.2f}"
            lines.append(f"- {quadrant}: Spearman rank correlation between LogME per stage and the cut sweep's "
                         f"validation accuracy: **{shown}** (goal: 0.8).")
    lines.append("- The advisor's time against the comparison's is measured in BENCHMARKS.md (wall times are kept out "
                 "of this report, a DVC output that must not change when nothing else does).")
    return lines


def _cell(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def summary_markdown(cfg, comparison: dict, sweep: dict, cuts: list[str], advice: dict | None = None,
                     checked: dict | None = None) -> str:
    from transferlab.analysis.verdict import sentence
    from transferlab.core.names import COURSE_NOTE

    regimes = [r for r in REGIMES if r in next(iter(comparison.values()))["regimes"]]
    lines = ["# Which transfer regime wins? The measured answer", "",
             f"Every regime in `regimes` trained on every quadrant, once per seed {list(cfg.seeds)}, each with the same "
             f"budget ({cfg.finetune.steps} optimizer steps, batch {cfg.finetune.batch_size}, its own learning rate). "
             f"The winner of a quadrant is the regime with the best **mean validation accuracy**; the test split is "
             f"reported for every regime and never used to choose.", "",
             "| quadrant | winner (validation) | its test acc | runner-up | validation margin | seeds won "
             "| within 1 std | course note's regime (rank) |", "|---|---|---|---|---|---|---|---|"]
    for quadrant, entry in comparison.items():
        v = entry["verdict"]
        runner = v["runner_up"] or "-"
        margin = f"{v['margin_val']:.3f}" if v["runner_up"] else "-"
        won = f"{v['seeds_won']} of {v['seeds_compared']}" if v["runner_up"] else "-"
        within = ("yes" if v["within_one_std"] else "no") if v["runner_up"] else "-"
        rank = f"{v['course_note']} ({v['course_note_rank']} of {len(entry['regimes'])})" \
            if v["course_note_rank"] else f"{v['course_note']} (not run)"
        lines.append(f"| {quadrant} | **{v['winner']}** | {_cell(v['winner_test']['acc'])} | {runner} | {margin} "
                     f"| {won} | {within} | {rank} |")
    lines += ["", *[f"- {sentence(q, e)}" for q, e in comparison.items()], "",
              f"![regime matrix]({FIGURES}/regime_matrix.png)", "",
              "## Every regime on every quadrant", "",
              "Validation accuracy (the criterion) / test accuracy, mean ± std over seeds. "
              "Marked *: the course note's regime; bold: the winner.", "",
              "| quadrant | " + " | ".join(regimes) + " |", "|---" * (len(regimes) + 1) + "|"]
    for quadrant, entry in comparison.items():
        cells = []
        for regime in regimes:
            s = entry["regimes"][regime]
            text = f"{_cell(s['val'])} / {_cell(s['test']['acc'])}{' *' if COURSE_NOTE[quadrant] == regime else ''}"
            cells.append(f"**{text}**" if regime == entry["verdict"]["winner"] else text)
        lines.append(f"| {quadrant} | " + " | ".join(cells) + " |")
    lines += ["", "Test macro-F1, mean ± std:", "", "| quadrant | " + " | ".join(regimes) + " |",
              "|---" * (len(regimes) + 1) + "|"]
    for quadrant, entry in comparison.items():
        lines.append(f"| {quadrant} | " + " | ".join(_cell(entry["regimes"][r]["test"]["macro_f1"]) for r in regimes)
                     + " |")
    if sweep:
        lines += ["", "## Cut-point sweep (truncate_freeze)", "",
                  "Validation / test accuracy, mean ± std over seeds, keeping the pretrained stages up to each cut.", "",
                  "| quadrant | " + " | ".join(cuts) + " |", "|---" * (len(cuts) + 1) + "|"]
        for quadrant, by_cut in sweep.items():
            lines.append(f"| {quadrant} | " + " | ".join(f"{_cell(by_cut[c]['val'])} / {_cell(by_cut[c]['test'])}"
                                                          for c in cuts) + " |")
        lines.append("")
        for quadrant, by_cut in sweep.items():
            best = max(cuts, key=lambda c: by_cut[c]["val"]["mean"])
            lines.append(f"- **{quadrant}**: the best cut on validation is `{best}` (test {_cell(by_cut[best]['test'])});"
                         f" keeping every stage (`{cuts[-1]}`) gives test {_cell(by_cut[cuts[-1]]['test'])}.")
        lines += ["", f"![cut-point sweep]({FIGURES}/cut_sweep.png)"]
    lines += advisor_markdown(advice or {}, checked or {})
    lines += ["", "Confusion matrices of the winners: " +
              ", ".join(f"[{q}](evaluate/{q}/confusion.png)" for q in comparison), ""]
    return "\n".join(lines)


def _chance(entry: dict) -> float:
    return round(1 / entry["num_classes"], 6)


def comparison_csv(comparison: dict) -> str:
    """Every regime on every quadrant, for `dvc plots` (template .dvc/plots/regimes.json)."""
    from transferlab.core.names import COURSE_NOTE

    lines = ["quadrant,regime,role,course_note,test_acc,test_acc_std,low,high,val_acc,chance"]
    for quadrant, entry in comparison.items():
        for regime, s in entry["regimes"].items():
            acc = s["test"]["acc"]
            role = "winner" if regime == entry["verdict"]["winner"] else "other"
            note = "prescribed" if COURSE_NOTE[quadrant] == regime else ""
            lines.append(f"{quadrant},{regime},{role},{note},{acc['mean']},{acc['std']},"
                         f"{round(acc['mean'] - acc['std'], 6)},{round(acc['mean'] + acc['std'], 6)},"
                         f"{s['val']['mean']},{_chance(entry)}")
    return "\n".join(lines) + "\n"


def learning_curves_csv(comparison: dict, models: Path) -> str:
    """train/acc and val/acc per epoch (mean over seeds) of every regime on every quadrant, named as in
    MLflow, for `dvc plots` (template .dvc/plots/learning_curves.json)."""
    import csv

    lines = ["quadrant,regime,metric,epoch,value,chance"]
    for quadrant, entry in comparison.items():
        for regime in entry["regimes"]:
            with open(models / "finetune" / regime / quadrant / "history.csv") as handle:
                rows = list(csv.DictReader(handle))
            for metric, column in (("train/acc", "train_acc"), ("val/acc", "val_acc")):
                by_epoch: dict[int, list[float]] = {}
                for row in rows:
                    if row.get(column):
                        by_epoch.setdefault(int(row["epoch"]), []).append(float(row[column]))
                for epoch, values in sorted(by_epoch.items()):
                    lines.append(f"{quadrant},{regime},{metric},{epoch},{round(sum(values) / len(values), 6)},"
                                 f"{_chance(entry)}")
    return "\n".join(lines) + "\n"


def cut_sweep_csv(sweep: dict, cuts: list[str], comparison: dict) -> str:
    lines = ["quadrant,cut_at,depth,val_acc,test_acc,test_acc_std,chance"]
    for quadrant, by_cut in sweep.items():
        for depth, cut in enumerate(cuts, start=1):
            s = by_cut[cut]
            lines.append(f"{quadrant},{cut},{depth},{s['val']['mean']},{s['test']['mean']},{s['test']['std']},"
                         f"{_chance(comparison[quadrant])}")
    return "\n".join(lines) + "\n"


def log_verdict(cfg, comparison: dict, reports: Path, summary: str, checked: dict) -> str | None:
    """The verdict on the pipeline's parent run: metrics per quadrant, winner tags, description, files."""
    from transferlab.core.config import flatten
    from transferlab.tracking import runs

    pipeline = runs.open_pipeline(cfg)
    parent = pipeline.run_id
    if parent is None:
        return None
    metrics, tags = {}, {"mlflow.note.content": summary}
    for quadrant, entry in comparison.items():
        v = entry["verdict"]
        metrics[f"{quadrant}/test_acc"] = v["winner_test"]["acc"]["mean"]
        metrics[f"{quadrant}/test_macro_f1"] = v["winner_test"]["macro_f1"]["mean"]
        metrics[f"{quadrant}/val_acc"] = v["winner_val"]["mean"]
        if v["runner_up"]:
            metrics[f"{quadrant}/margin_val"] = v["margin_val"]
        tags[f"{quadrant}.winner"] = v["winner"]
        tags[f"{quadrant}.course_note_rank"] = str(v["course_note_rank"])
    if checked:
        metrics["advisor/hits"] = sum(r["is_winner"] or r["within_one_std"] for r in checked.values())
        metrics.update({f"advisor/spearman_{q}": r["spearman_cut_sweep"] for q, r in checked.items()
                        if r.get("spearman_cut_sweep") is not None})
    runs.log_metrics(parent, metrics)
    runs.set_tags(parent, tags)
    from omegaconf import OmegaConf

    params = flatten(OmegaConf.load(reports.parent / "params.yaml"))
    existing = runs.client().get_run(parent).data.params
    new = {k: v for k, v in params.items() if k not in existing}
    if new:
        from mlflow.entities import Param

        runs.with_retry(lambda: runs.client().log_batch(parent, params=[Param(k, runs._param_value(v))
                                                                       for k, v in sorted(new.items())]))
    runs.log_artifact(parent, reports / "summary.md", "report")
    runs.log_artifact(parent, reports / METRICS_FILE, "report")
    for figure in sorted((reports / FIGURES).glob("*.png")):
        runs.log_artifact(parent, figure, f"report/{FIGURES}")
    for quadrant in comparison:
        runs.log_artifact(parent, reports / "evaluate" / quadrant / "confusion.png", f"report/evaluate/{quadrant}")
    for preview in sorted((reports / "augment").glob("*.png")):
        runs.log_artifact(parent, preview, "report/augment")
    runs.tag_dvc_inputs(parent)
    return parent


def main(argv: list[str]) -> None:
    cfg = load_config("report", argv)
    where = paths(cfg)
    reports = where["reports"]
    comparison_file = reports / "evaluate" / "comparison.json"
    sweep_file = where["models"] / "cut_sweep" / "results.json"
    advice_dir = reports / "advice"
    with prepared("report", {comparison_file: "evaluate", sweep_file: "cut_sweep", advice_dir: "advise"},
                  [reports / METRICS_FILE, reports / FIGURES], check_store):
        with heavy_imports():
            from rich.console import Console

            from transferlab.analysis import figures
            from transferlab.analysis.verdict import sentence
            from transferlab.core.config import save_config
            from transferlab.core.files import staged_dir, write_json, write_text
        found = json.loads(comparison_file.read_text())
        comparison = {q: found[q] for q in QUADRANTS}
        sweep_results = json.loads(sweep_file.read_text())
        cuts = list(sweep_results["cut_at"])
        sweep = cut_sweep_table(sweep_results)
        advice = {q: json.loads((advice_dir / f"{q}.json").read_text()) for q in QUADRANTS
                  if (advice_dir / f"{q}.json").is_file()}
        checked = advisor_check(advice, comparison, sweep)
        regimes = [r for r in REGIMES if r in next(iter(comparison.values()))["regimes"]]
        summary = summary_markdown(cfg, comparison, sweep, cuts, advice, checked)
        with staged_dir(reports / FIGURES) as staging:
            figures.heatmap(comparison, regimes, staging / "regime_matrix.png")
            if sweep:
                figures.cut_curve(sweep, cuts, staging / "cut_sweep.png")
        write_json(reports / METRICS_FILE, metrics_json(comparison, checked), sort_keys=False)
        write_text(reports / "summary.md", summary)
        write_text(reports / "comparison.csv", comparison_csv(comparison))
        write_text(reports / "cut_sweep.csv", cut_sweep_csv(sweep, cuts, comparison))
        write_text(reports / "learning_curves.csv", learning_curves_csv(comparison, where["models"]))
        save_config(cfg, reports / "report_config.yaml")
        parent = log_verdict(cfg, comparison, reports, summary, checked)
        console = Console(soft_wrap=True)
        for quadrant, entry in comparison.items():
            console.print(sentence(quadrant, entry).replace("**", "").replace("`", ""))
        if parent:
            console.print(f"verdict logged to the pipeline's parent MLflow run {parent}")


if __name__ == "__main__":
    run_stage("report", main)
