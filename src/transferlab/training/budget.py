"""The training budget every regime gets, and what a run's result depends on.

Every regime trains for the same number of optimizer steps (``finetune.steps``) at its own
learning rate, whatever the size of the target, so a frozen regime is not handicapped by
fewer updates and a small target is seen many times over. The budget is split into
``finetune.epochs`` equal epochs of ``steps / epochs`` optimizer steps: here an epoch is a
share of the budget, not one pass over the data (a small dataset is passed over several
times in an epoch, a large one in part; ``training.loaders.EpochSampler`` draws the images).
Every run is validated after each epoch, at the same points of its budget, so learning
curves of all regimes and quadrants line up; the best validation checkpoint is its result.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path


def steps_per_epoch(steps: int, epochs: int) -> int:
    """Optimizer steps in each of the ``epochs`` (the total is ``steps`` rounded up to a multiple)."""
    return math.ceil(steps / epochs)


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 of the package's source: resumable state made by other code is never resumed."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
