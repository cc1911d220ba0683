"""Stage `report`: reports/metrics.json (DVC metrics), reports/summary.md and a comparison figure."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from transferlab.cli import run_stage
from transferlab.config import QUADRANTS, ConfigError, load_config, paths, save_config
from transferlab.data import write_json

METRIC_KEYS = ("acc", "macro_f1", "loss")


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
    lines += ["", "![comparison](comparison.png)", "", "Confusion matrices: " +
              ", ".join(f"[{q}](eval/{q}/confusion.png)" for q in results), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    cfg = load_config("report", argv)
    reports = paths(cfg)["reports"]
    results = collect(reports / "eval")
    write_json(reports / "metrics.json", results)
    (reports / "summary.md").write_text(summary_markdown(results))
    comparison_figure(results, reports / "comparison.png")
    save_config(cfg, reports / "report_config.yaml")
    table = Table(title="test results")
    for column in ("quadrant", "regime", "acc", "macro_f1", "loss", "chance"):
        table.add_column(column)
    for quadrant, r in results.items():
        table.add_row(quadrant, r["regime"], *(f"{r[k]:.4f}" for k in ("acc", "macro_f1", "loss")), f"{r['chance']:.3f}")
    Console().print(table)


if __name__ == "__main__":
    run_stage("report", main)
