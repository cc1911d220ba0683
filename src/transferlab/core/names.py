"""The fixed vocabulary of the pipeline: datasets, quadrants, regimes and the course note's rule."""

from __future__ import annotations

QUADRANTS = ("small_similar", "small_different", "large_similar", "large_different")
DATASETS = ("source", *QUADRANTS)
# The four regimes (docs/regimes.md), in this order everywhere (tables, figures, metrics).
REGIMES = ("freeze_all", "truncate_freeze", "finetune_all", "scratch")
# What the course note prescribes for each quadrant (docs/regimes.md). Used only to say where
# its choice ranked; winners are chosen on validation data, never by this table.
COURSE_NOTE = {
    "small_similar": "freeze_all",
    "small_different": "truncate_freeze",
    "large_similar": "finetune_all",
    "large_different": "scratch",
}
SPLITS = ("train", "val", "test")


def same_target(quadrant: str) -> list[str]:
    """The quadrants of the target dataset ``quadrant`` belongs to, small first: small_similar and
    large_similar for either."""
    kind = quadrant.split("_", 1)[1]
    return [f"small_{kind}", f"large_{kind}"]


def seed_words(*parts: int | str) -> list[int]:
    """Integer words for numpy's SeedSequence from names and numbers (stable across runs)."""
    import zlib

    return [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
