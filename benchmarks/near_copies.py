"""What the near-copy check catches, and what it wrongly flags, per threshold (docs/data.md).

Usage: python benchmarks/near_copies.py <folder of class sub-folders> [--images 600] [--sizes 32 64]
       [--seed 0]
       python benchmarks/near_copies.py --across <evaluation folder> <training folder> [--images 200]
       [--sizes 64] [--montage pairs.png]

``--images`` photos drawn once with ``--seed`` from ``<folder>/<class>/*``. Each is decoded as `download`
decodes it (transferlab.datasets.prepare.decode_bytes) at each size, and so is each of its copies, made
from the original file with PIL and albumentations:

- resized: shorter side 256 px (bicubic), PNG;       - jpeg80: re-encoded at JPEG quality 80;
- resized_jpeg: both;                                - hflip: mirrored;  - rot90: a quarter turn;
- augmented: albumentations Affine (rotate +-15 deg, scale 0.9-1.1), brightness/contrast +-0.2,
  a flip with p 0.5: the kind of copies an augmented dataset is made of;
- crop80: the central 80 % of the photo (a tighter framing of the same shot).

Printed per size and threshold (bits of the 64-bit pHash, transferlab.datasets.near_copies):
the share of copies within the threshold of their original (closest of its 8 mirror/rotation
variants: what `download` compares), and for different photos of the folder, the share of pairs within
it and the share of photos with any other photo within it (a false flag, unless the folder really holds
copies: the closest such pairs are printed to look at).

``--across``: the near-copies `download` would find between two folders of real images (up to
``--images`` evaluation images, every training image), with the histogram of their grey-level
differences and, with ``--montage``, a random sample of 10 pairs to look at: the evaluation image, the
same under its mirror/rotation closest to the training image, and the training image.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

THRESHOLDS = (4, 6, 8, 10, 12, 14, 16)


def pick(folder: Path, n: int, seed: int) -> list[Path]:
    import numpy as np

    files = sorted(
        f
        for c in folder.iterdir()
        if c.is_dir() and not c.name.startswith(".")
        for f in c.iterdir()
        if f.is_file() and not f.name.startswith(".")
    )
    if len(files) < n:
        raise SystemExit(f"{folder}: {len(files)} files, fewer than --images {n}")
    order = np.random.default_rng(seed).permutation(len(files))[:n]
    return [files[i] for i in sorted(order)]


def encoded(image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def copies(path: Path, seed: int) -> dict[str, bytes]:
    """Each kind of copy of one photo, as file bytes."""
    import albumentations as A
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        photo = ImageOps.exif_transpose(opened).convert("RGB")
    w, h = photo.size
    scale = 256 / min(w, h)
    small = photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    augment = A.Compose(
        [
            A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), p=1.0),
            A.RandomBrightnessContrast(0.2, 0.2, p=1.0),
            A.HorizontalFlip(p=0.5),
        ],
        seed=seed,
    )
    augmented = Image.fromarray(augment(image=np.asarray(photo))["image"])
    cw, ch = round(w * 0.8), round(h * 0.8)
    crop = photo.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    return {
        "resized": encoded(small, "PNG"),
        "jpeg80": encoded(photo, "JPEG", quality=80),
        "resized_jpeg": encoded(small, "JPEG", quality=80),
        "hflip": encoded(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"),
        "rot90": encoded(photo.transpose(Image.Transpose.ROTATE_90), "PNG"),
        "augmented": encoded(augmented, "PNG"),
        "crop80": encoded(crop, "PNG"),
    }


def images_under(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))


def across(evaluation: Path, training: Path, n: int, size: int, seed: int, montage: Path | None) -> None:
    import numpy as np
    from PIL import Image

    from transferlab.datasets.near_copies import find, grey_difference, variants
    from transferlab.datasets.prepare import decode_bytes

    rng = np.random.default_rng(seed)
    queries = images_under(evaluation)
    queries = [queries[i] for i in sorted(rng.permutation(len(queries))[:n])]
    references = images_under(training)
    a = [decode_bytes(f.read_bytes(), size)[0] for f in queries]
    b = [decode_bytes(f.read_bytes(), size)[0] for f in references]
    start = time.perf_counter()
    pairs = find(a, b)
    grey = np.asarray([p.grey for p in pairs])
    edges = [0, 0.5, 1, 2, 3, 4, 5]
    counts = np.histogram(grey, edges)[0] if len(pairs) else [0] * (len(edges) - 1)
    print(
        f"{len(queries)} images of {evaluation} against {len(references)} of {training} at {size} px "
        f"({time.perf_counter() - start:.1f} s): {len(pairs)} confirmed pairs; {len({p.query for p in pairs})} "
        f"of the {len(queries)} have a near-copy there, {len({p.reference for p in pairs})} training images are one"
    )
    print("grey-level difference: " + ", ".join(f"{lo}-{hi}: {c}" for lo, hi, c in zip(edges, edges[1:], counts)))
    if montage is not None and pairs:
        sample = [pairs[i] for i in sorted(rng.permutation(len(pairs))[:10])]
        for p in sample:
            print(f"  {queries[p.query].name} ~ {references[p.reference].name}: {p.distance} bits, {p.grey} grey")

        def aligned(p):  # the query under its variant closest to the reference (a copy may be mirrored)
            return min(variants(a[p.query]), key=lambda v: grey_difference(v, b[p.reference]))

        rows = [np.concatenate([a[p.query], aligned(p), b[p.reference]], 1) for p in sample]
        Image.fromarray(np.concatenate(rows, 0)).resize((6 * size, 2 * size * len(rows))).save(montage)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--across", type=Path, nargs=2, metavar=("EVALUATION", "TRAINING"))
    parser.add_argument("--montage", type=Path)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.across:
        across(args.across[0], args.across[1], args.images, args.sizes[0], args.seed, args.montage)
        return
    if args.folder is None:
        parser.error("give a folder, or --across EVALUATION TRAINING")

    import numpy as np

    from transferlab.datasets.near_copies import (
        NEAR_COPY_BITS,
        NEAR_COPY_GREY,
        distances,
        grey_difference,
        hashes,
        variant_hashes,
    )
    from transferlab.datasets.prepare import decode_bytes

    files = pick(args.folder, args.images, args.seed)
    start = time.perf_counter()
    made = [copies(f, args.seed + i) for i, f in enumerate(files)]
    kinds = list(made[0])
    print(f"{len(files)} photos from {args.folder}, {len(kinds)} kinds of copy ({time.perf_counter() - start:.0f} s)")
    for size in args.sizes:
        start = time.perf_counter()
        originals = [decode_bytes(f.read_bytes(), size)[0] for f in files]
        held = variant_hashes(originals)
        hash_seconds = time.perf_counter() - start
        caught, grey = {}, {}
        for kind in kinds:
            copy_images = [decode_bytes(m[kind], size)[0] for m in made]
            d = np.bitwise_count(np.bitwise_xor(held, hashes(copy_images)[:, None])).min(axis=1)
            caught[kind] = d
            grey[kind] = np.asarray([grey_difference(o, c) for o, c in zip(originals, copy_images)])
        between = distances(held, held[:, 0])
        np.fill_diagonal(between, 64)
        upper = between[np.triu_indices(len(files), 1)]
        print(f"\n{size} px (8-variant hashes of {len(files)} photos: {hash_seconds:.1f} s)")
        print(
            "Share of copies caught by the hash alone (and also confirmed in grey levels, <= "
            f"{NEAR_COPY_GREY}); different photos within the bits:"
        )
        print("| bits | " + " | ".join(kinds) + " | random pairs | photos with a false match |")
        print("|---" * (len(kinds) + 3) + "|")
        for t in THRESHOLDS:
            rates = " | ".join(
                f"{np.mean(caught[k] <= t):.1%} ({np.mean((caught[k] <= t) & (grey[k] <= NEAR_COPY_GREY)):.1%})"
                for k in kinds
            )
            print(f"| {t} | {rates} | {np.mean(upper <= t):.3%} | {np.mean(between.min(axis=1) <= t):.1%} |")
        print(
            "largest distance of a copy to its original, bits: "
            + ", ".join(f"{k} {int(caught[k].max())}" for k in kinds)
        )
        print("largest grey difference (16 px) of a copy: " + ", ".join(f"{k} {grey[k].max():.1f}" for k in kinds))
        rows, cols = np.nonzero(np.triu(between <= NEAR_COPY_BITS, 1))
        confirmed = [grey_difference(originals[a], originals[b]) for a, b in zip(rows, cols)]
        print(
            f"different photos within {NEAR_COPY_BITS} bits: {len(rows)} pairs, "
            f"{sum(g <= NEAR_COPY_GREY for g in confirmed)} also within {NEAR_COPY_GREY} grey levels"
        )
        closest = np.argsort(upper)[:5]
        rows, cols = np.triu_indices(len(files), 1)
        for k in closest:
            a, b = rows[k], cols[k]
            print(
                f"  closest different photos: {files[a].relative_to(args.folder)} ~ "
                f"{files[b].relative_to(args.folder)}: {upper[k]} bits"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
