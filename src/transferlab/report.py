"""Stage `report`: reports/metrics.json (DVC metrics), reports/summary.md and figures in reports/figures/.

Always: the pipeline's four quadrants (each under the regime params.yaml gives it). When
``matrix.seeds`` is not empty, also the regime × quadrant matrix (a heatmap of mean ± std
test accuracy with the course note's recommended regime marked, and per quadrant in words
which regime won and by how much) and truncate_freeze's cut-point curve. The words are
computed from the results, whatever they say; nothing here knows what "should" win.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from transferlab import tracking
from transferlab.cli import run_stage
from transferlab.config import QUADRANTS, ConfigError, load_config, paths, save_config
from transferlab.cut_sweep import CUTS, cut_name
from transferlab.data import write_json
from transferlab.regime_matrix import CELLS, cell_name

METRIC_KEYS = ("acc", "macro_f1", "loss", "ece")
# The course note's rule (DESIGN.md §2): the regime it recommends for each quadrant.
RECOMMENDED = {"small_similar": "freeze_all", "small_different": "truncate_freeze",
               "large_similar": "finetune_all", "large_different": "scratch"}


def collect(eval_dir) -> dict[str, dict]:
    results = {}
    for quadrant in QUADRANTS:
        path = eval_dir / quadrant / "metrics.json"
        if not path.is_file():
            raise ConfigError(f"{path} not found: run `dvc repro evaluate@{quadrant}` first")
        found = json.loads(path.read_text())
        results[quadrant] = {"regime": found["regime"], "n_test": found["n_test"], "chance": round(found["chance"], 4),
                             **{k: round(found[k], 4) for k in METRIC_KEYS}}
    return results


def _read_runs(files: dict, rerun_hint: str) -> dict:
    found = {}
    for key, path in files.items():
        if not path.is_file():
            raise ConfigError(f"{path} not found: run `{rerun_hint}` first")
        found[key] = json.loads(path.read_text())["test"]["acc"]
    return found


def _stats(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float)
    return {"mean": round(float(array.mean()), 4), "std": round(float(array.std(ddof=1)) if len(array) > 1 else 0.0, 4),
            "n": len(array), "per_seed": [round(v, 4) for v in values]}


def collect_matrix(cfg: DictConfig, reports: Path) -> dict[str, dict[str, dict]]:
    """{quadrant: {regime: stats of test acc over matrix.seeds}} from the cells the params ask for."""
    m = cfg.matrix
    files = {(q, r, s): reports / CELLS / f"{cell_name(q, r, s)}.json"
             for q in m.quadrants for r in m.regimes for s in m.seeds}
    acc = _read_runs(files, "dvc repro regime_matrix")
    return {q: {r: _stats([acc[q, r, s] for s in m.seeds]) for r in m.regimes} for q in m.quadrants}


def collect_cut_sweep(cfg: DictConfig, reports: Path) -> dict[str, dict[str, dict]]:
    """{quadrant: {cut_at: stats of test acc over matrix.seeds}}, cuts in params order."""
    m = cfg.matrix
    files = {(q, c, s): reports / CUTS / f"{cut_name(q, c, s)}.json"
             for q in m.cut_sweep.quadrants for c in m.cut_sweep.cut_at for s in m.seeds}
    acc = _read_runs(files, "dvc repro cut_sweep")
    return {q: {c: _stats([acc[q, c, s] for s in m.seeds]) for c in m.cut_sweep.cut_at} for q in m.cut_sweep.quadrants}


def matrix_verdicts(matrix: dict[str, dict[str, dict]]) -> list[str]:
    """Per quadrant, in words: which regime won, by how much, how consistently, and the recommended one."""
    lines = []
    for quadrant, by_regime in matrix.items():
        ranked = sorted(by_regime, key=lambda r: by_regime[r]["mean"], reverse=True)
        best, line = by_regime[ranked[0]], f"**{quadrant}**: `{ranked[0]}` won"
        line += f" with test acc {best['mean']:.3f} ± {best['std']:.3f}"
        if len(ranked) > 1:
            second = by_regime[ranked[1]]
            wins = sum(a > b for a, b in zip(best["per_seed"], second["per_seed"]))
            margin = best["mean"] - second["mean"]
            line += (f", {margin:.3f} ahead of `{ranked[1]}` ({second['mean']:.3f} ± {second['std']:.3f}); "
                     f"it beat it on {wins} of {best['n']} seeds")
            if margin <= max(best["std"], second["std"]):
                line += " (a gap within one standard deviation: not a clear win at this many seeds)"
        line += "."
        recommended = RECOMMENDED.get(quadrant)
        if recommended == ranked[0]:
            line += " That is the regime the course note recommends."
        elif recommended in by_regime:
            rec = by_regime[recommended]
            line += (f" The course note recommends `{recommended}`: {rec['mean']:.3f} ± {rec['std']:.3f}, "
                     f"{best['mean'] - rec['mean']:.3f} behind (rank {ranked.index(recommended) + 1} of {len(ranked)}).")
        lines.append(line)
    return lines


def matrix_figure(matrix: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    quadrants, regimes = list(matrix), list(next(iter(matrix.values())))
    means = np.array([[matrix[q][r]["mean"] for r in regimes] for q in quadrants])
    fig, ax = plt.subplots(figsize=(1.9 * len(regimes) + 2, 0.9 * len(quadrants) + 1.6))
    image = ax.imshow(means, cmap="viridis", vmin=0, vmax=1)
    for i, q in enumerate(quadrants):
        best = int(np.argmax(means[i]))
        for j, r in enumerate(regimes):
            cell = matrix[q][r]
            ax.text(j, i, f"{cell['mean']:.3f}\n± {cell['std']:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if cell["mean"] < 0.6 else "black", fontweight="bold" if j == best else "normal")
            if RECOMMENDED.get(q) == r:
                ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="red", linewidth=2.5))
    n = next(iter(next(iter(matrix.values())).values()))["n"]
    ax.set_xticks(range(len(regimes)), regimes, fontsize=8)
    ax.set_yticks(range(len(quadrants)), quadrants, fontsize=8)
    ax.set_title(f"mean test acc ± std over {n} seeds; red box: course note's regime, bold: best", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cut_sweep_figure(sweep: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for quadrant, by_cut in sweep.items():
        cuts = list(by_cut)
        ax.errorbar(range(len(cuts)), [by_cut[c]["mean"] for c in cuts], yerr=[by_cut[c]["std"] for c in cuts],
                    marker="o", capsize=3, label=quadrant)
        ax.set_xticks(range(len(cuts)), cuts)
    ax.set_xlabel("cut_at: last pretrained stage kept (frozen)")
    ax.set_ylabel("test acc (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.set_title("truncate_freeze: transferability of each depth", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def comparison_figure(results: dict[str, dict], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{q}\n({r['regime']})" for q, r in results.items()]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, key in ((-0.2, "acc"), (0.2, "macro_f1")):
        bars = ax.bar(x + offset, [r[key] for r in results.values()], width=0.4, label=f"test {key}")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.scatter(x, [r["chance"] for r in results.values()], marker="_", s=900, color="black", label="chance", zorder=3)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("test score")
    ax.set_title("transfer regimes per quadrant")
    ax.legend(fontsize=8, loc="upper left", ncols=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_markdown(results: dict[str, dict]) -> str:
    lines = ["# Transfer-learning regimes: test results", "",
             "| quadrant | regime | test acc | test macro-F1 | test loss | chance | test images |",
             "|---|---|---|---|---|---|---|"]
    for quadrant, r in results.items():
        lines.append(f"| {quadrant} | {r['regime']} | {r['acc']:.4f} | {r['macro_f1']:.4f} | {r['loss']:.4f} "
                     f"| {r['chance']:.3f} | {r['n_test']} |")
    lines += ["", "![comparison](figures/comparison.png)", "", "Confusion matrices: " +
              ", ".join(f"[{q}](eval/{q}/confusion.png)" for q in results), ""]
    return "\n".join(lines)


def matrix_markdown(cfg: DictConfig, matrix: dict, sweep: dict) -> str:
    m = cfg.matrix
    regimes = list(m.regimes)
    lines = ["## Every regime on every quadrant", "",
             f"Test accuracy, mean ± std over seeds {list(m.seeds)}. Every run: {m.steps} optimizer steps at its "
             f"regime's learning rate ({', '.join(f'{r} {m.lr[r]}' for r in regimes)}), best-val checkpoint tested; "
             f"truncate_freeze cut at `{m.cut_at}`. Marked *: the course note's regime for the quadrant.", "",
             "| quadrant | " + " | ".join(regimes) + " |", "|---" * (len(regimes) + 1) + "|"]
    for quadrant, by_regime in matrix.items():
        cells = [f"{by_regime[r]['mean']:.3f} ± {by_regime[r]['std']:.3f}{' *' if RECOMMENDED.get(quadrant) == r else ''}"
                 for r in regimes]
        lines.append(f"| {quadrant} | " + " | ".join(cells) + " |")
    lines += ["", "![regime matrix](figures/regime_matrix.png)", "", *[f"- {v}" for v in matrix_verdicts(matrix)], "",
              "## Cut-point sweep (truncate_freeze)", "",
              "| quadrant | " + " | ".join(m.cut_sweep.cut_at) + " |", "|---" * (len(m.cut_sweep.cut_at) + 1) + "|"]
    for quadrant, by_cut in sweep.items():
        lines.append(f"| {quadrant} | " + " | ".join(f"{v['mean']:.3f} ± {v['std']:.3f}" for v in by_cut.values()) + " |")
    lines.append("")
    for quadrant, by_cut in sweep.items():
        best = max(by_cut, key=lambda c: by_cut[c]["mean"])
        lines.append(f"- **{quadrant}**: the best cut is `{best}` ({by_cut[best]['mean']:.3f}); keeping every stage "
                     f"(`{list(by_cut)[-1]}`) gives {list(by_cut.values())[-1]['mean']:.3f}.")
    lines += ["", "![cut-point sweep](figures/cut_sweep.png)", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    cfg = load_config("report", argv)
    reports = paths(cfg)["reports"]
    results = collect(reports / "eval")
    summary, metrics = summary_markdown(results), dict(results)
    matrix = sweep = None
    if cfg.matrix.seeds:
        matrix, sweep = collect_matrix(cfg, reports), collect_cut_sweep(cfg, reports)
        summary += "\n" + matrix_markdown(cfg, matrix, sweep)
        metrics["matrix"] = {q: {r: {k: v[k] for k in ("mean", "std", "n")} for r, v in by.items()} for q, by in matrix.items()}
        metrics["cut_sweep"] = {q: {c: {k: v[k] for k in ("mean", "std", "n")} for c, v in by.items()} for q, by in sweep.items()}
    figures = reports / "figures"
    shutil.rmtree(figures, ignore_errors=True)  # no stale figure from an earlier matrix
    figures.mkdir(parents=True)
    comparison_figure(results, figures / "comparison.png")
    if matrix is not None:
        matrix_figure(matrix, figures / "regime_matrix.png")
        cut_sweep_figure(sweep, figures / "cut_sweep.png")
    write_json(reports / "metrics.json", metrics)
    (reports / "summary.md").write_text(summary)
    (reports / "comparison.csv").write_text("quadrant,regime,acc,macro_f1\n" + "".join(
        f"{q},{r['regime']},{r['acc']},{r['macro_f1']}\n" for q, r in results.items()))
    parent = tracking.finish_pipeline(cfg.tracking.experiment_name, cfg.seed,
                                      [reports / "summary.md", reports / "metrics.json", reports / "augment_preview.png",
                                       *sorted(figures.glob("*.png"))])
    save_config(cfg, reports / "report_config.yaml")
    table = Table(title="test results")
    for column in ("quadrant", "regime", "acc", "macro_f1", "loss", "chance"):
        table.add_column(column)
    for quadrant, r in results.items():
        table.add_row(quadrant, r["regime"], *(f"{r[k]:.4f}" for k in ("acc", "macro_f1", "loss")), f"{r['chance']:.3f}")
    Console().print(table)
    if parent:
        print(f"report logged to the pipeline's parent MLflow run {parent}")
    if matrix is not None:
        for line in matrix_verdicts(matrix):
            Console().print(line.replace("**", "").replace("`", ""))


if __name__ == "__main__":
    run_stage("report", main)
