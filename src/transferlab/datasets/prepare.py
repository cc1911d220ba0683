"""Preparation: the images a dataset keeps, decoded once into uint8 arrays, with exact per-class counts.

Used by the `download` stage. For each dataset (the source or a quadrant's target):

1. **scan**: every candidate of the chosen classes is read and hashed (sha256 of the file's bytes, or of
   the image for in-memory datasets), in parallel worker processes. A folder two quadrants use is
   scanned once (``Scans``). Nothing is decoded yet: a 60,000-image folder of which 500 are kept
   costs 500 decodes, not 60,000;
2. **content checks** on the hashes: the same content under two classes is a *label conflict*
   (both labels named); twice in one split, a *duplicate*; in two splits, *leakage* (the evaluation
   side keeps its copy). ``on_bad_image=fail`` stops with the first few and a count; ``skip`` leaves
   them out and lists every one;
3. **pick and decode**: per class, a seeded order of the usable candidates; the first ones go to
   test, then val, then train (exact counts; splits the source lacks are carved out of its train
   split, or test out of val with ``test_from: val``). Only picked images are decoded (EXIF
   orientation applied; grayscale, palette, RGBA on white, 16-bit and CMYK to 8-bit RGB; shorter
   side resized to ``image_size``, centre crop). An image that does not decode, is one flat colour,
   or is far smaller than ``image_size`` (a placeholder, a thumbnail) is a bad image, handled by the
   same policy; under ``skip`` the next one in the order takes its place;
4. **write**: arrays (.npy, read memory-mapped by training), ``manifest.csv`` (every candidate: its
   file, sha256, label, split and row in that split's arrays, or why it was left out) and
   ``card.json`` (classes, counts per class and split, sha256 of every array and of the manifest).
"""

from __future__ import annotations

import csv
import hashlib
import io
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, ImageOps

from transferlab.core.artifacts import DatasetCard
from transferlab.core.errors import ConfigError
from transferlab.core.names import SPLITS
from transferlab.datasets.sources import shown

SHOWN = 5
CHUNK = 256
# Which split of the prepared data keeps a leaked image (the other side drops it under `skip`).
EVALUATION_FIRST = {"test": 0, "val": 1, "train": 2}
FLAT_RANGE = 2  # an image whose every pixel is within this of the others is one flat colour
TOO_SMALL_FACTOR = 4  # an image whose shorter side is below image_size / this is a thumbnail or placeholder


# --------------------------------------------------------------------------- one image


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.int64)
        image = Image.fromarray((np.clip(pixels, 0, 65535) // 257).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def _shorter_side_centre_crop(image: Image.Image, size: int) -> np.ndarray:
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new != (width, height):
        image = image.resize(new, Image.Resampling.BICUBIC, reducing_gap=2.0)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def standard_image(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> (size, size, 3) uint8 RGB by the resize policy (see module doc)."""
    return _shorter_side_centre_crop(_to_rgb(image), size)


def degenerate(
    image: np.ndarray, original: tuple[int, int] | None, size: int, max_aspect: float | None = None
) -> str | None:
    """Why a decoded image is no real example (one flat colour; far smaller than ``size``; a strip longer
    than ``max_aspect`` times its width, of which the centre crop keeps a sliver), or None."""
    if int(image.max()) - int(image.min()) <= FLAT_RANGE:
        return "degenerate: one flat colour"
    if original is not None and min(original) * TOO_SMALL_FACTOR < size:
        return f"degenerate: {original[0]}x{original[1]} px, far smaller than image_size {size}"
    if original is not None and max_aspect is not None and max(original) > max_aspect * min(original):
        return (
            f"degenerate: {original[0]}x{original[1]} px, a strip (aspect ratio {max(original) / min(original):.0f} "
            f"beyond data.max_aspect_ratio {max_aspect:g})"
        )
    return None


def decode_bytes(data: bytes, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(the standard image, the file's own width and height)."""
    with Image.open(io.BytesIO(data)) as image:
        original = image.size
        if image.format == "JPEG":
            image.draft(None, (size, size))  # decode at 1/2, 1/4, 1/8 scale while both sides stay >= size
        return standard_image(image, size), original


def _hash_files(paths: list[str]) -> list[tuple[str, str | None]]:
    """Worker: (sha256 or "", error or None) per file."""
    out: list[tuple[str, str | None]] = []
    for path in paths:
        try:
            out.append((hashlib.sha256(Path(path).read_bytes()).hexdigest(), None))
        except OSError as err:
            out.append(("", f"unreadable: {err.strerror or err}"))
    return out


def _decode_files(task: tuple[list[str], int, float | None]) -> tuple[np.ndarray, list[str | None]]:
    """Worker: (images, error or None) for a chunk of files."""
    paths, size, max_aspect = task
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    errors = []
    for i, path in enumerate(paths):
        try:
            out[i], original = decode_bytes(Path(path).read_bytes(), size)
            errors.append(degenerate(out[i], original, size, max_aspect))
        except Exception as err:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError, ...)
            errors.append(decoder_reason(err))
    return out, errors


def decoder_reason(err: Exception) -> str:
    """The decoder's reason in one line, without the object reprs PIL puts in it ("cannot identify image file
    <_io.BytesIO object at 0x7f...>": the address says nothing, the file is named beside the reason)."""
    import re

    text = str(err).splitlines()[0] if str(err) else "cannot decode"
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", text).strip() or "cannot decode"
    return f"{type(err).__name__}: {text}"


def workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def worker_pool():
    """The download stage's one pool of worker processes (hashing, decoding, rendering generated classes).
    ``forkserver``: workers start from a clean server process, not by forking this one. A fork of a process
    that has already computed (NumPy's and Pillow's threads, an earlier pool's handler threads) can
    inherit a lock some thread held at that moment and hang for ever: seen here with one fork pool per
    dataset, after the first dataset."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["transferlab.datasets.synthetic", "transferlab.datasets.prepare"])
    return context.Pool(workers())


def _chunks(items: list, size: int = CHUNK) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _imap(pool, function, tasks: list):
    return pool.imap(function, tasks) if pool is not None and len(tasks) > 1 else map(function, tasks)


# --------------------------------------------------------------------------- scanning


@dataclass
class Scanned:
    """One source split, hashed: every candidate's key (its file, relative to the dataset's root, or
    '<split>[i]'), content digest and label (an index into the source's classes)."""

    raw: Any  # the sources.RawSplit
    keys: list[str]
    digests: list[str]
    labels: np.ndarray
    unreadable: dict[int, str] = field(default_factory=dict)


def scan(raw, split: str, root: Path | None, pool) -> Scanned:
    if raw.files is not None:
        paths = [str(p) for p in raw.files]
        hashed = [pair for chunk in _imap(pool, _hash_files, _chunks(paths)) for pair in chunk]
        keys = [shown(os.path.relpath(p, root) if root is not None else p) for p in paths]
        unreadable = {i: error for i, (_, error) in enumerate(hashed) if error}
        return Scanned(raw, keys, [digest for digest, _ in hashed], raw.labels, unreadable)
    digests = [
        hashlib.sha256(np.ascontiguousarray(raw.images[i]).tobytes()).hexdigest()
        if isinstance(raw.images, np.ndarray)
        else hashlib.sha256(np.asarray(raw.images[i]).tobytes()).hexdigest()
        for i in range(len(raw))
    ]
    return Scanned(raw, [f"{split}[{i}]" for i in range(len(raw))], digests, raw.labels)


class Scans:
    """Scanned source splits, once per dataset (a folder two quadrants use is read and hashed once)."""

    def __init__(self, pool):
        self.pool = pool
        self._done: dict = {}

    def get(self, dataset: str, source, split: str) -> Scanned:
        if (dataset, split) not in self._done:
            root = getattr(source, "root", None) or getattr(source, "folder", None)
            self._done[dataset, split] = scan(source.read(split), split, Path(root) if root else None, self.pool)
        return self._done[dataset, split]


# --------------------------------------------------------------------------- content checks


@dataclass
class Problem:
    kind: str  # conflict | duplicate | leakage | overlap | bad | near_copy
    source: str  # the source split
    index: int
    reason: str


def content_problems(
    scans: dict[str, Scanned], chosen: dict[str, np.ndarray], class_names: list[str], draws_from: dict[str, str]
) -> list[Problem]:
    """Label conflicts, duplicates within a split and leakage between splits, among the chosen candidates
    (``chosen[src]``: their positions in source split ``src``). Each copy but the one kept is a problem;
    a conflict leaves no copy usable (which label would be right?)."""
    order = sorted(scans, key=lambda src: min(EVALUATION_FIRST[s] for s, f in draws_from.items() if f == src))
    groups: dict[str, list[tuple[str, int]]] = {}
    for src in order:
        for i in chosen[src]:
            if int(i) not in scans[src].unreadable:
                groups.setdefault(scans[src].digests[i], []).append((src, int(i)))
    problems = []
    for members in groups.values():
        if len(members) < 2:
            continue
        labels = {int(scans[src].labels[i]) for src, i in members}
        first_src, first = members[0]
        first_key = scans[first_src].keys[first]
        if len(labels) > 1:
            names = " and ".join(sorted(class_names[label] for label in labels))
            others = ", ".join(f"{scans[s].keys[i]} ({class_names[int(scans[s].labels[i])]})" for s, i in members)
            for src, i in members:
                problems.append(
                    Problem("conflict", src, i, f"label conflict: the same image is filed as {names} ({others})")
                )
            continue
        for src, i in members[1:]:
            kind = "duplicate" if src == first_src else "leakage"
            where = "in the same split" if kind == "duplicate" else f"in split {first_src}"
            problems.append(Problem(kind, src, i, f"{kind}: same content as {first_key} ({where})"))
    return problems


PROBLEM_WORDS = {
    "conflict": "images filed under two classes (label conflicts)",
    "duplicate": "duplicate images within one split",
    "leakage": "images that are also in another split (leakage)",
    "bad": "image files that do not decode or are no real example (flat, tiny)",
    "overlap": "source images that are also in a target's val or test split (its transfer scores would be inflated)",
    "near_copy": "near-copies (resized, re-encoded, mirrored or turned) of an image in another split (leakage)",
}


def overlap_problems(
    scans: dict[str, Scanned], chosen: dict[str, np.ndarray], held_out: dict[str, str]
) -> list[Problem]:
    """Source candidates whose content is a target's val or test image, or a near-copy of one
    (``held_out``: the source file's sha256 -> how and where).
    Pretraining on them puts the target's evaluation images in the pretrained network; under ``skip``
    they are left out of the source (the evaluation side keeps its copy)."""
    return [
        Problem("overlap", src, int(i), f"overlap: {held_out[found.digests[i]]}")
        for src, found in scans.items()
        for i in chosen[src]
        if int(i) not in found.unreadable and found.digests[i] in held_out
    ]


def evaluation_digests(name: str, folder: Path) -> dict[str, str]:
    """sha256 -> "same content as <name> <split> image <file>" of a prepared target's val and test images."""
    return {
        row["sha256"]: f"same content as {name} {row['split']} image {row['file']}"
        for row in read_manifest(folder)
        if row["split"] in ("val", "test")
    }


def read_manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


OVERLAP_COLUMNS = ["target", "target_file", "source_file", "sha256", "bits", "grey"]


def kept_images(folder: Path, splits: tuple[str, ...]) -> tuple[list[dict[str, str]], list[np.ndarray], np.ndarray]:
    """A prepared dataset's manifest rows in ``splits`` with a perceptual hash, their images, and the
    hashes (uint64, as ``near_copies.hashes`` computes them)."""
    from transferlab.datasets.near_copies import from_hex

    rows = [r for r in read_manifest(folder) if r["split"] in splits and r.get("phash")]
    arrays = {s: np.load(folder / f"x_{s}.npy", mmap_mode="r") for s in splits}
    images = [np.asarray(arrays[r["split"]][int(r["index"])]) for r in rows]
    return rows, images, np.asarray([from_hex(r["phash"]) for r in rows], dtype=np.uint64)


def train_overlaps(staging: Path, targets: list[str]) -> list[dict[str, str]]:
    """Target training images whose content is a source training image, or a near-copy of one (reported,
    not refused: the target's own scores stay honest, but the target learned nothing new from them)."""
    from transferlab.datasets import near_copies

    source = {row["sha256"]: row["file"] for row in read_manifest(staging / "source") if row["split"] == "train"}
    rows = [
        {
            "target": name,
            "target_file": row["file"],
            "source_file": source[row["sha256"]],
            "sha256": row["sha256"],
            "bits": "0",
            "grey": "0.0",
        }
        for name in targets
        for row in read_manifest(staging / name)
        if row["split"] == "train" and row["sha256"] in source
    ]
    known, images, hashes = kept_images(staging / "source", ("train",))
    if not known:  # generated source data has no perceptual hashes
        return rows
    for name in targets:
        target_rows, target_images, _ = kept_images(staging / name, ("train",))
        for pair in near_copies.find(target_images, images, hashes):
            row = target_rows[pair.query]
            if row["sha256"] not in source:
                rows.append(
                    {
                        "target": name,
                        "target_file": row["file"],
                        "source_file": known[pair.reference]["file"],
                        "sha256": row["sha256"],
                        "bits": str(pair.distance),
                        "grey": str(pair.grey),
                    }
                )
    return rows


def near_copies_in_source(staging: Path, targets: list[str]) -> dict[str, str]:
    """The source's kept images that are near-copies of a target's val or test image: source sha256 -> how
    and where (``held_out`` for preparing the source again)."""
    from transferlab.datasets import near_copies

    known, images, hashes = kept_images(staging / "source", SPLITS)
    found: dict[str, str] = {}
    if not known:
        return found
    for name in targets:
        target_rows, target_images, _ = kept_images(staging / name, ("val", "test"))
        for pair in near_copies.find(target_images, images, hashes):
            row = target_rows[pair.query]
            found.setdefault(
                known[pair.reference]["sha256"],
                f"a near copy ({pair.distance} bits, {pair.grey} grey levels) of {name} {row['split']} image "
                f"{row['file']}",
            )
    return found


def write_overlaps(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=OVERLAP_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def problem_error(where: str, problems: list[Problem], scans: dict[str, Scanned]) -> ConfigError:
    kind = problems[0].kind
    same = [p for p in problems if p.kind == kind]
    if kind == "conflict":  # every copy shares one reason, which names them all: show each group once
        groups = list(dict.fromkeys(p.reason for p in same))
        shown = "; ".join(groups[:SHOWN])
        more = f"; and {len(groups) - SHOWN} more" if len(groups) > SHOWN else ""
    else:
        shown = "; ".join(f"{scans[p.source].keys[p.index]} ({p.reason})" for p in same[:SHOWN])
        more = f"; and {len(same) - SHOWN} more" if len(same) > SHOWN else ""
    return ConfigError(
        f"{where}: {len(same)} {PROBLEM_WORDS[kind]}: {shown}{more} (data.on_bad_image=skip leaves "
        f"them out and lists them in manifest.csv)"
    )


# --------------------------------------------------------------------------- picking and decoding


@dataclass
class Picked:
    """What one source split gives: per prepared split, positions in the source split (picking order)."""

    rows: dict[str, list[int]]
    images: dict[int, np.ndarray]  # decoded, by position
    bad: dict[int, str]  # decode failures and degenerate images, by position


def _decode(
    scanned: Scanned, positions: list[int], size: int, pool, max_aspect: float | None = None
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    raw, images, bad = scanned.raw, {}, {}
    if raw.files is not None:
        tasks = [([str(raw.files[i]) for i in chunk], size, max_aspect) for chunk in _chunks(positions)]
        done = [pair for pair in _imap(pool, _decode_files, tasks)]
        for chunk, (decoded, errors) in zip(_chunks(positions), done):
            for j, i in enumerate(chunk):
                if errors[j] is None:
                    images[i] = decoded[j]
                else:
                    bad[i] = errors[j]
        return images, bad
    for i in positions:
        image = _in_memory_image(raw.images, i, size)
        reason = degenerate(image, None, size)
        if reason is None:
            images[i] = image
        else:
            bad[i] = reason
    return images, bad


def _in_memory_image(source: Any, i: int, size: int) -> np.ndarray:
    image = source[i]
    if isinstance(source, np.ndarray) and image.shape[:2] == (size, size):
        array = np.asarray(image, dtype=np.uint8)
        return np.repeat(array.reshape(size, size, 1), 3, axis=-1) if array.ndim == 2 or array.shape[-1] == 1 else array
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    return standard_image(image, size)


def pick_and_decode(
    scanned: Scanned,
    candidates: np.ndarray,
    class_map: np.ndarray,
    wanted: dict[str, int | None],
    seed_words: list[int],
    size: int,
    policy: str,
    pool,
    where: str,
    describe_shortfall,
    known: Picked | None = None,
    max_aspect: float | None = None,
) -> Picked:
    """Per class, take the usable candidates in a seeded order: the first ones for the fixed-count splits
    (test, then val, then train), the rest for a split that takes "all the rest" (None). Decode only those;
    a bad image is replaced by the next candidate (``skip``) or stops everything (``fail``). ``known``: an
    earlier pick of the same source split, whose decoded (and bad) images are not decoded again."""
    open_ended = [s for s, n in wanted.items() if n is None]
    if len(open_ended) > 1:
        raise ConfigError(
            f"{where}: splits {', '.join(open_ended)} both take 'all' images from one source split "
            f"(set a count per class for all but one)"
        )
    fixed_counts = {s: n for s, n in wanted.items() if n is not None}
    fixed = sorted(fixed_counts, key=lambda s: EVALUATION_FIRST[s])
    needed = sum(fixed_counts.values())
    labels = class_map[scanned.labels]
    rows: dict[str, list[int]] = {s: [] for s in wanted}
    images, bad = {}, {}
    n_classes = int(class_map.max()) + 1
    orders = {}
    for cls in range(n_classes):
        members = candidates[labels[candidates] == cls]
        orders[cls] = members[
            np.random.default_rng(np.random.SeedSequence([*seed_words, cls])).permutation(len(members))
        ].tolist()
    accepted: dict[int, list[int]] = {cls: [] for cls in range(n_classes)}
    cursor = {cls: 0 for cls in range(n_classes)}
    while True:
        todo = []
        for cls in range(n_classes):
            missing = len(orders[cls]) - cursor[cls] if open_ended else needed - len(accepted[cls])
            take = orders[cls][cursor[cls] : cursor[cls] + max(0, missing)]
            cursor[cls] += len(take)
            todo += take
        if not todo:
            break
        if known is not None:
            images.update({i: known.images[i] for i in todo if i in known.images})
            bad.update({i: known.bad[i] for i in todo if i in known.bad})
            todo = [i for i in todo if i not in known.images and i not in known.bad]
        decoded, failed = _decode(scanned, todo, size, pool, max_aspect)
        if failed and policy == "fail":
            first = sorted(failed)
            shown = "; ".join(f"{scanned.keys[i]} ({failed[i]})" for i in first[:SHOWN])
            more = f"; and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
            raise ConfigError(
                f"{where}: {len(failed)} {PROBLEM_WORDS['bad']}: {shown}{more} (data.on_bad_image=skip leaves "
                f"them out and lists them in manifest.csv)"
            )
        images.update(decoded)
        bad.update(failed)
        for cls in range(n_classes):
            accepted[cls] = [i for i in orders[cls][: cursor[cls]] if i in images]
    for cls in range(n_classes):
        usable = accepted[cls]
        if len(usable) < needed or (open_ended and len(usable) == needed):
            raise ConfigError(describe_shortfall(cls, len(usable), fixed, open_ended))
        start = 0
        for split in fixed:
            rows[split] += usable[start : start + fixed_counts[split]]
            start += fixed_counts[split]
        if open_ended:
            rows[open_ended[0]] += usable[start:]
    return Picked({s: sorted(r) for s, r in rows.items()}, images, bad)


# --------------------------------------------------------------------------- writing


def write_split(folder: Path, split: str, images: list[np.ndarray], labels: np.ndarray, size: int) -> None:
    x = open_memmap(folder / f"x_{split}.npy", mode="w+", dtype=np.uint8, shape=(len(images), size, size, 3))
    for row, image in enumerate(images):
        x[row] = image
    x.flush()
    del x
    np.save(folder / f"y_{split}.npy", np.ascontiguousarray(labels, dtype=np.int64))


def write_arrays(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> None:
    """x_<split>.npy / y_<split>.npy from ``images[rows]``, copied in chunks (bounded memory)."""
    x = open_memmap(folder / f"x_{split}.npy", mode="w+", dtype=np.uint8, shape=(len(rows), *images.shape[1:]))
    for start in range(0, len(rows), 8192):
        x[start : start + 8192] = images[rows[start : start + 8192]]
    x.flush()
    del x
    np.save(folder / f"y_{split}.npy", np.ascontiguousarray(labels[rows], dtype=np.int64))


MANIFEST_COLUMNS = ["file", "sha256", "phash", "label", "split", "index", "left_out", "near_copy"]


def write_manifest(folder: Path, rows: list[dict]) -> None:
    """manifest.csv: one row per candidate image, sorted by file."""
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["file"], r["split"], str(r["index"]))))


def card(folder: Path, name: str, classes: list[str], source: dict, image_size: int, extra: dict) -> DatasetCard:
    """The dataset card: counts per class and split, sha256 of every array file and the manifest, the source."""
    from transferlab.core.files import sha256_of

    counts, checksums = {}, {}
    for split in SPLITS:
        labels = np.load(folder / f"y_{split}.npy")
        per_class = np.bincount(labels, minlength=len(classes))
        counts[split] = {c: int(n) for c, n in zip(classes, per_class)}
        for prefix in ("x", "y"):
            checksums[f"{prefix}_{split}.npy"] = sha256_of(folder / f"{prefix}_{split}.npy")
    checksums["manifest.csv"] = sha256_of(folder / "manifest.csv")
    return DatasetCard(
        name=name,
        classes=classes,
        image_size=image_size,
        counts={s: int(sum(c.values())) for s, c in counts.items()},
        counts_per_class=counts,
        sha256=checksums,
        source=source,
        resize="shorter side to image_size (bicubic), centre crop; EXIF orientation applied; RGB",
        **extra,
    )
