"""Near-copies: resized, re-encoded, flipped or rotated copies of one photo, which a byte hash misses.

Each prepared image (already decoded to ``image_size``, so a resized copy decodes to nearly the same
array) gets a 64-bit perceptual hash (imagehash's pHash: the signs of the 8x8 lowest DCT frequencies of
a 32x32 grey version, against their median). Two images are near-copies when their hashes differ in at
most ``NEAR_COPY_BITS`` bits. Flips and quarter turns are caught by hashing the 8 mirror/rotation
variants of one side of the comparison (the evaluation side: val and test are the smaller splits).
The threshold and what it catches, per kind of copy, against random pairs of the same folders, are
measured by benchmarks/near_copies.py (docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Measured by benchmarks/near_copies.py on 1,500 flower photos at 32 and 64 px (docs/data.md): resized,
# re-encoded, mirrored and quarter-turned copies are at most 4 bits from their original (100 % caught at
# 4); of the 1.1 M pairs of different photos none is within 6 bits, 0.2-0.5 % of photos have another
# within 8, 2 % within 10. Augmented copies (rotated 15 degrees, rescaled, brightened) are mostly missed.
NEAR_COPY_BITS = 6
# ... and then confirmed in pixels: at most this mean grey-level difference at 16x16 (0-255 levels).
# scikit-learn's 8x8 digits share pHashes within 6 bits between different writers (40 pairs in 600),
# at 9.5 grey levels or more; the flowers' resized, re-encoded, mirrored and turned copies differ from
# their original by 0.9 at most (benchmarks/near_copies.py).
NEAR_COPY_GREY = 5.0
FEATURELESS_STD = 1.0  # grey levels
# Pairwise distances are computed in blocks of this many query rows (bounded memory: 8 variants x
# block x reference bytes).
BLOCK = 256


def featureless(image: np.ndarray) -> bool:
    """One grey level all over (a flat colour, whatever its hue): its pHash is noise around a median of
    zeros, equal for every such image, so it says nothing about copies (byte-identical ones are still
    caught by sha256)."""
    grey = np.asarray(image, dtype=np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return float(grey.std()) < FEATURELESS_STD


def perceptual_hash(image: np.ndarray) -> int:
    """The 64-bit pHash of one uint8 HxWx3 image, as an int."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(image)).hash.flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hashes(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """pHash of each image, uint64 (N,)."""
    return np.asarray([perceptual_hash(np.asarray(image)) for image in images], dtype=np.uint64)


def variants(image: np.ndarray) -> list[np.ndarray]:
    """The image under the 8 symmetries of the square: 4 quarter turns, each also mirrored."""
    turns = [np.rot90(image, k) for k in range(4)]
    return [np.ascontiguousarray(v) for t in turns for v in (t, t[:, ::-1])]


def variant_hashes(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """pHash of each image's 8 variants, uint64 (N, 8); column 0 is the image itself."""
    if len(images) == 0:
        return np.zeros((0, 8), dtype=np.uint64)
    return np.asarray([[perceptual_hash(v) for v in variants(np.asarray(image))] for image in images], np.uint64)


def to_hex(value: int | np.uint64) -> str:
    return f"{int(value):016x}"


def from_hex(text: str) -> int:
    return int(text, 16)


@dataclass(frozen=True)
class Pair:
    """Query ``query`` is a near-copy of reference ``reference``: their closest variants differ in
    ``distance`` bits (and, once ``confirm``-ed, by ``grey`` mean grey levels at 16 px)."""

    query: int
    reference: int
    distance: int
    grey: float | None = None


def grey16(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(
        Image.fromarray(np.asarray(image)).convert("L").resize((16, 16), Image.Resampling.BOX), np.float32
    )


def grey_difference(query: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute grey-level difference at 16x16 between the reference and the closest of the query's
    8 variants."""
    target = grey16(reference)
    return min(float(np.abs(grey16(v) - target).mean()) for v in variants(query))


def confirm(pairs: list[Pair], query_images, reference_images, limit: float = NEAR_COPY_GREY) -> list[Pair]:
    """The hash's candidates that are also close in pixels: two different pictures with little structure
    (handwritten digits at 8x8, say) can share a pHash; a copy also shares its grey levels."""
    out = []
    for pair in pairs:
        grey = grey_difference(query_images[pair.query], reference_images[pair.reference])
        if grey <= limit:
            out.append(Pair(pair.query, pair.reference, pair.distance, round(grey, 1)))
    return out


def distances(query_variants: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Hamming distance of every query (its closest variant) to every reference: int (N, M)."""
    out = np.empty((len(query_variants), len(reference)), dtype=np.int64)
    for start in range(0, len(query_variants), BLOCK):
        block = query_variants[start : start + BLOCK]
        bits = np.bitwise_count(np.bitwise_xor(block[:, :, None], reference[None, None, :]))
        out[start : start + BLOCK] = bits.min(axis=1)
    return out


def near_pairs(
    query_variants: np.ndarray, reference: np.ndarray, same_set: bool = False, limit: int = NEAR_COPY_BITS
) -> list[Pair]:
    """Every (query, reference) pair within ``limit`` bits, closest first per query. ``same_set``: the
    query and reference are one list (a split against itself): each unordered pair once, no self-pairs."""
    if len(query_variants) == 0 or len(reference) == 0:
        return []
    found = []
    for start in range(0, len(query_variants), BLOCK):
        d = distances(query_variants[start : start + BLOCK], reference)
        if same_set:
            rows = np.arange(start, start + len(d))
            d[np.arange(len(reference))[None, :] <= rows[:, None]] = limit + 1
        q, r = np.nonzero(d <= limit)
        found += [Pair(int(start + a), int(b), int(d[a, b])) for a, b in zip(q, r)]
    return sorted(found, key=lambda p: (p.query, p.distance, p.reference))


class HashCache:
    """Hashes of one dataset's decoded images by key (its source split and position), so that a second
    round of picking, after near-copies were left out, hashes only the images new to it."""

    def __init__(self) -> None:
        self._plain: dict = {}
        self._variants: dict = {}

    def plain(self, image: np.ndarray, key) -> int:
        if key not in self._plain:
            self._plain[key] = perceptual_hash(image)
        return self._plain[key]

    def variants(self, images: list[np.ndarray], keys: list) -> np.ndarray:
        """(N, 8) variant hashes of ``images`` (see ``variant_hashes``)."""
        todo = [(k, image) for k, image in zip(keys, images) if k not in self._variants]
        for (k, _), row in zip(todo, variant_hashes([image for _, image in todo])):
            self._variants[k] = row
        return np.asarray([self._variants[k] for k in keys], dtype=np.uint64).reshape(len(keys), 8)


def find(query_images, reference_images, reference_hashes: np.ndarray | None = None) -> list[Pair]:
    """Every confirmed near-copy of a reference image among the query images (indices into both lists;
    featureless images are not compared). ``reference_hashes``: ``hashes(reference_images)``, if known."""
    q = [i for i in range(len(query_images)) if not featureless(query_images[i])]
    r = [j for j in range(len(reference_images)) if not featureless(reference_images[j])]
    if not q or not r:
        return []
    qi = [query_images[i] for i in q]
    rj = [reference_images[j] for j in r]
    known = hashes(rj) if reference_hashes is None else reference_hashes[r]
    pairs = confirm(near_pairs(variant_hashes(qi), known), qi, rj)
    return [Pair(q[p.query], r[p.reference], p.distance, p.grey) for p in pairs]
