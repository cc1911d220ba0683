"""The report's figures (matplotlib, Agg). PNGs carry no timestamp or software tag, so the same
numbers give the same bytes (they are DVC outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferlab.core.artifacts import Comparison, Stats
from transferlab.core.names import COURSE_NOTE, REGIMES

PNG = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > matrix.max() / 2 else "black",
        )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG)
    plt.close(fig)


def heatmap(comparison: Comparison, regimes: list[str], path: Path) -> None:
    """Quadrant x regime: mean test accuracy ± std; the winner (chosen on validation) in bold with a
    star, the course note's regime boxed."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    quadrants = list(comparison.quadrants)
    means = np.array([[comparison[q].regimes[r].test["acc"].mean for r in regimes] for q in quadrants])
    fig, ax = plt.subplots(figsize=(1.9 * len(regimes) + 2.2, 0.9 * len(quadrants) + 1.8))
    image = ax.imshow(means, cmap="viridis", vmin=0, vmax=1)
    for i, q in enumerate(quadrants):
        winner = comparison[q].verdict.recommended
        for j, r in enumerate(regimes):
            test = comparison[q].regimes[r].test["acc"]
            star = " ★" if r == winner else ""
            ax.text(
                j,
                i,
                f"{test.mean:.3f}{star}\n± {test.std:.3f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if test.mean < 0.6 else "black",
                fontweight="bold" if r == winner else "normal",
            )
            if COURSE_NOTE.get(q) == r:
                ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="red", linewidth=2.5))
    n = next(iter(comparison.quadrants.values())).regimes[regimes[0]].val.n
    ax.set_xticks(range(len(regimes)), regimes, fontsize=8)
    ax.set_yticks(range(len(quadrants)), quadrants, fontsize=8)
    ax.set_title(
        f"test accuracy, mean ± std over {n} seeds\n★ bold: winner, chosen on validation; red box: the "
        f"course note's regime",
        fontsize=8,
    )
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG)
    plt.close(fig)


def cut_curve(sweep: dict[str, dict[str, dict[str, Stats]]], cuts: list[str], path: Path) -> None:
    """Test accuracy (mean ± std over seeds) against the cut point, one line per quadrant."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for quadrant, by_cut in sweep.items():
        ax.errorbar(
            range(len(cuts)),
            [by_cut[c]["test"].mean for c in cuts],
            yerr=[by_cut[c]["test"].std for c in cuts],
            marker="o",
            capsize=3,
            label=quadrant,
        )
    ax.set_xticks(range(len(cuts)), cuts)
    ax.set_xlabel("cut_at: last pretrained stage kept (frozen)")
    ax.set_ylabel("test acc (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.set_title("truncate_freeze: how far up the pretrained features transfer", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG)
    plt.close(fig)


def size_curve(curves: dict, crossings: dict, chance: dict[str, float], path: Path) -> None:
    """Accuracy against images per class (log scale), one panel per quadrant, one colour per regime: validation
    (the criterion) solid with the seeds' std, test dashed; each crossover marked between its two sizes."""
    plt = _pyplot()
    quadrants = list(curves)
    fig, axes = plt.subplots(1, len(quadrants), figsize=(5.2 * len(quadrants), 4.2), squeeze=False)
    colours = {r: f"C{i}" for i, r in enumerate(REGIMES)}
    for ax, quadrant in zip(axes[0], quadrants):
        for regime, points in curves[quadrant].items():
            sizes = [p.per_class for p in points]
            ax.errorbar(
                sizes,
                [p.val.mean for p in points],
                yerr=[p.val.std for p in points],
                marker="o",
                capsize=3,
                color=colours[regime],
                label=regime,
            )
            ax.plot(sizes, [p.test.mean for p in points], linestyle="--", color=colours[regime], alpha=0.6)
        for i, c in enumerate(crossings[quadrant]):
            x = (c.below * c.above) ** 0.5
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                f"{c.ahead} > {c.behind}",
                (x, 0.95 - 0.05 * (i % 8)),
                fontsize=6,
                ha="center",
                color=colours[c.ahead],
            )
        ax.axhline(chance[quadrant], color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        sizes = [p.per_class for p in next(iter(curves[quadrant].values()))]
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_ylim(0, 1)
        ax.set_xlabel("training images per class (log scale)")
        ax.set_ylabel("accuracy, mean ± std over seeds")
        ax.set_title(f"{quadrant}: solid validation, dashed test; dotted, a crossover", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=PNG)
    plt.close(fig)
