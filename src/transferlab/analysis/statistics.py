"""The statistics of the verdict: paired bootstrap intervals, the call, convergence (no torch, no MLflow).

A regime's result on a quadrant is, per seed, which validation images its best checkpoint got
right (``correct[seed, image]``, 0 or 1). Two regimes are compared on the seeds both ran (the
same seed: the same data order, head initialisation and augmentations) and on the same images:

- ``paired_bootstrap``: the mean accuracy difference A - B, and its interval from resampling
  seeds and validation images with replacement (both paired: one draw of seeds and images is
  applied to A and B alike), and P(A > B) as the share of draws with a positive difference
  (ties count half). Vectorised: a draw is a pair of multinomial weight vectors, so its
  difference is ``w_seeds @ (A - B) @ w_images / (n_seeds n_images)``.
- ``still_improving``: whether a regime's runs were still improving over the last third of their
  budget: the mean over seeds of (best validation accuracy in the last third - best before) is at
  least one binomial standard error of one run's validation accuracy, sqrt(p (1 - p) / n_val). A
  rise of one image is noise: the committed run's first version flagged 15 of 16 regime results that way,
  among them 0.668 -> 0.672 (1 image of 250).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAWS = 4000


@dataclass(frozen=True)
class Difference:
    mean: float  # mean accuracy of A minus B over the shared seeds and images
    low: float  # interval bounds at ``level``
    high: float
    p_better: float  # P(A > B) under the bootstrap
    level: float
    seeds: int  # shared seeds the difference is over

    @property
    def separated(self) -> bool:
        """The interval excludes 0: A is better than B at this level."""
        return self.low > 0


def correctness(bits: str) -> np.ndarray:
    """A record's per-image validation correctness ("0110...") as a 0/1 array."""
    return np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, level: float = 0.95, draws: int = DRAWS, seed: int = 0
) -> Difference:
    """A - B for two (seeds, images) 0/1 arrays over the same seeds (rows) and images (columns)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired arrays must have one shape (seeds, images), got {a.shape} and {b.shape}")
    n_seeds, n_images = a.shape
    diff = a.astype(np.float64) - b.astype(np.float64)
    rng = np.random.default_rng(seed)
    w_seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=draws)
    w_images = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=draws)
    samples = ((w_seeds @ diff) * w_images).sum(axis=1) / (n_seeds * n_images)
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    p_better = float(np.mean(samples > 0) + 0.5 * np.mean(samples == 0))
    return Difference(
        mean=round(float(diff.mean()), 6),
        low=round(float(low), 6),
        high=round(float(high), 6),
        p_better=round(p_better, 4),
        level=level,
        seeds=n_seeds,
    )


def improvement(val_by_epoch: list[float]) -> tuple[float, float] | None:
    """(best validation accuracy before the last third of the epochs, best in it), or None for < 3 epochs."""
    n = len(val_by_epoch)
    if n < 3:
        return None
    cut = n - max(1, n // 3)
    return max(val_by_epoch[:cut]), max(val_by_epoch[cut:])


def still_improving(curves: list[list[float]], n_val: int) -> bool:
    """Whether runs (one validation curve per seed) were still improving over the last third of their budget:
    their mean rise there is at least one standard error of a validation accuracy over ``n_val`` images."""
    found = [f for f in (improvement(c) for c in curves) if f is not None]
    if not found or n_val < 1:
        return False
    before = sum(f[0] for f in found) / len(found)
    rise = sum(f[1] - f[0] for f in found) / len(found)
    return rise > 0 and rise >= (before * (1 - before) / n_val) ** 0.5 - 1e-9
