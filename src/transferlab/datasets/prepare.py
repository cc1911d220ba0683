"""Preparation: every image decoded once into uint8 arrays, with exact per-class counts.

Used by the `download` stage. For each dataset (the source or a quadrant's target):

1. every candidate image of the chosen classes is decoded (files in parallel worker
   processes): EXIF orientation applied; grayscale, palette, RGBA (composited on white),
   16-bit and CMYK images converted to 8-bit RGB; the shorter side resized to
   ``image_size`` and the centre cropped (JPEGs are decoded at a reduced scale first);
2. files that do not decode are bad images: ``on_bad_image=fail`` stops with their paths
   (the first few and a count), ``skip`` leaves them out and lists every one in
   ``skipped.csv``; the same image (by content hash) in two splits is leakage, handled
   the same way (``skip`` drops it from the training side);
3. each split gets exactly the asked number of images per class, picked by a seeded
   per-class shuffle; splits the source lacks (val, or all three for one pool) are carved
   out of its train pool without overlap. Too few images is an error naming the class;
4. arrays are written as .npy (read memory-mapped by training) plus ``card.json``: classes,
   counts per class and split, sha256 of every array, the source and what was skipped.

A dataset is written into the download stage's staging folder, which replaces data/raw
only when every dataset succeeded.
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

from transferlab.core.errors import ConfigError
from transferlab.core.names import SPLITS

BAD_IMAGE_POLICIES = ("fail", "skip")
SHOWN_PATHS = 5
CHUNK = 256
# Which split of the prepared data keeps a leaked image (the other side drops it under `skip`).
EVALUATION_FIRST = {"test": 0, "val": 1, "train": 2}


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


def decode_bytes(data: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft(None, (size, size))  # decode at 1/2, 1/4, 1/8 scale while both sides stay >= size
        return standard_image(image, size)


def _decode_files(task: tuple[list[str], int]) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Worker: (images, content digests, error or None) for a chunk of files."""
    paths, size = task
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    digests, errors = [], []
    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            digests.append("")
            errors.append(f"unreadable: {err.strerror or err}")
            continue
        digests.append(hashlib.blake2b(data, digest_size=16).hexdigest())
        try:
            out[i] = decode_bytes(data, size)
            errors.append(None)
        except Exception as err:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError, ...)
            errors.append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'cannot decode'}")
    return out, digests, errors


def workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def worker_pool():
    """The download stage's one pool of worker processes (decoding files, rendering generated classes).
    ``forkserver``: workers start from a clean server process, not by forking this one. A fork of a process
    that has already computed (NumPy's and Pillow's threads, an earlier pool's handler threads) can
    inherit a lock some thread held at that moment and hang for ever: seen here with one fork pool per
    dataset, after the first dataset."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["transferlab.datasets.synthetic", "transferlab.datasets.prepare"])
    return context.Pool(workers())


# --------------------------------------------------------------------------- one source split


@dataclass
class Decoded:
    """The decoded candidates of one source split (images in a temporary memory-mapped file)."""

    images: np.ndarray
    labels: np.ndarray          # indices into the chosen classes
    keys: list[str]             # file path or '<split>[i]' for in-memory images
    digests: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)   # (key, reason)
    good: np.ndarray | None = None


def decode_split(raw, split: str, chosen: np.ndarray, class_map: np.ndarray, size: int, scratch: Path,
                 pool=None) -> Decoded:
    """Decode the images of ``raw`` (a sources.RawSplit) at positions ``chosen`` (in ``pool`` when given)."""
    images = open_memmap(scratch, mode="w+", dtype=np.uint8, shape=(len(chosen), size, size, 3))
    labels = class_map[raw.labels[chosen]]
    if raw.files is not None:
        keys = [str(raw.files[i]) for i in chosen]
        digests, errors = [], []
        tasks = [(keys[s:s + CHUNK], size) for s in range(0, len(keys), CHUNK)]
        results = pool.imap(_decode_files, tasks) if pool is not None and len(tasks) > 1 else map(_decode_files, tasks)
        _collect(results, images, digests, errors)
    else:
        keys = [f"{split}[{i}]" for i in chosen]
        errors = [None] * len(chosen)
        _decode_in_memory(raw.images, chosen, images, size)
        digests = [hashlib.blake2b(images[i].tobytes(), digest_size=16).hexdigest() for i in range(len(chosen))]
    bad = [(key, error) for key, error in zip(keys, errors) if error is not None]
    good = np.asarray([error is None for error in errors], dtype=bool)
    return Decoded(images, labels, keys, digests, bad, good)


def _collect(results, images: np.ndarray, digests: list, errors: list) -> None:
    start = 0
    for chunk, chunk_digests, chunk_errors in results:
        images[start:start + len(chunk)] = chunk
        digests.extend(chunk_digests)
        errors.extend(chunk_errors)
        start += len(chunk)


def _decode_in_memory(source: Any, chosen: np.ndarray, out: np.ndarray, size: int) -> None:
    if isinstance(source, np.ndarray) and source.ndim in (3, 4) and source.shape[1:3] == (size, size):
        for start in range(0, len(chosen), 4096):  # already the right size: copy, gray -> 3 channels
            block = np.asarray(source[chosen[start:start + 4096]], dtype=np.uint8)
            if block.ndim == 3 or block.shape[-1] == 1:
                block = np.repeat(block.reshape(*block.shape[:3], 1), 3, axis=-1)
            out[start:start + len(block)] = block
        return
    for j, i in enumerate(chosen):
        image = source[i]
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
        out[j] = standard_image(image, size)


# --------------------------------------------------------------------------- picking


def leaked(decoded: dict[str, Decoded], draws_from: dict[str, str]) -> list[tuple[str, int, str]]:
    """(source split, index, the other copy) for every image whose content also appears in
    another source split, or twice in a source split that feeds several prepared splits:
    such copies could land in two prepared splits. The evaluation side keeps its copy."""
    feeds = {src: sum(1 for s in draws_from.values() if s == src) for src in decoded}
    ordered = sorted(decoded, key=lambda src: min(EVALUATION_FIRST[s] for s, f in draws_from.items() if f == src))
    owner: dict[str, tuple[str, int]] = {}
    found = []
    for split in ordered:
        d = decoded[split]
        for i in np.flatnonzero(d.good):
            first = owner.setdefault(d.digests[i], (split, int(i)))
            if first != (split, int(i)) and (first[0] != split or feeds[split] > 1):
                found.append((split, int(i), decoded[first[0]].keys[first[1]]))
    return found


def pick(labels: np.ndarray, usable: np.ndarray, wanted: dict[str, int | None], n_classes: int,
         seed_words: list[int], where: str, classes: list[str], source_split: str) -> dict[str, np.ndarray]:
    """Indices per prepared split drawn from one source split: exactly ``wanted[split]`` per
    class (None: all the rest, at most one such split), seeded, no overlap."""
    open_ended = [s for s, n in wanted.items() if n is None]
    if len(open_ended) > 1:
        raise ConfigError(f"{where}: splits {', '.join(open_ended)} both take 'all' images from source split "
                          f"{source_split} (set a count per class for all but one)")
    fixed = [s for s in sorted(wanted, key=EVALUATION_FIRST.get) if wanted[s] is not None]
    picked: dict[str, list[np.ndarray]] = {s: [] for s in wanted}
    for cls in range(n_classes):
        members = np.flatnonzero((labels == cls) & usable)
        needed = sum(wanted[s] for s in fixed)
        if len(members) < needed or (open_ended and len(members) == needed):
            asked = " + ".join(f"{wanted[s]} ({s})" for s in fixed) + (" + at least 1 (" + open_ended[0] + ")"
                                                                        if open_ended else "")
            raise ConfigError(f"{where}: class {classes[cls]!r} has {len(members)} usable images in source split "
                              f"{source_split}, asked for {asked}")
        order = members[np.random.default_rng(np.random.SeedSequence([*seed_words, cls])).permutation(len(members))]
        start = 0
        for split in fixed:
            picked[split].append(order[start:start + wanted[split]])
            start += wanted[split]
        if open_ended:
            picked[open_ended[0]].append(order[start:])
    return {s: np.sort(np.concatenate(parts)) for s, parts in picked.items()}


# --------------------------------------------------------------------------- writing


def write_arrays(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> None:
    """x_<split>.npy / y_<split>.npy from ``images[rows]``, copied in chunks (bounded memory)."""
    x = open_memmap(folder / f"x_{split}.npy", mode="w+", dtype=np.uint8, shape=(len(rows), *images.shape[1:]))
    for start in range(0, len(rows), 8192):
        x[start:start + 8192] = images[rows[start:start + 8192]]
    x.flush()
    del x
    np.save(folder / f"y_{split}.npy", np.ascontiguousarray(labels[rows], dtype=np.int64))


def card(folder: Path, name: str, classes: list[str], source: dict, image_size: int, extra: dict) -> dict:
    """The dataset card: counts per class and split, sha256 of every array file, the source."""
    from transferlab.datasets.sources import sha256_of

    counts, checksums = {}, {}
    for split in SPLITS:
        labels = np.load(folder / f"y_{split}.npy")
        per_class = np.bincount(labels, minlength=len(classes))
        counts[split] = {c: int(n) for c, n in zip(classes, per_class)}
        for prefix in ("x", "y"):
            checksums[f"{prefix}_{split}.npy"] = sha256_of(folder / f"{prefix}_{split}.npy")
    return {"name": name, "classes": classes, "image_size": image_size,
            "counts": {s: int(sum(c.values())) for s, c in counts.items()}, "counts_per_class": counts,
            "sha256": checksums, "source": source,
            "resize": "shorter side to image_size (bicubic), centre crop; EXIF orientation applied; RGB",
            **extra}


def write_skipped(folder: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(folder / "skipped.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "file", "reason"])
        writer.writerows(rows)


def bad_input_error(where: str, what: str, items: list[tuple[str, str]], total: int | None = None) -> ConfigError:
    shown = "; ".join(f"{key} ({reason})" for key, reason in items[:SHOWN_PATHS])
    more = len(items) - SHOWN_PATHS
    return ConfigError(f"{where}: {len(items)} {what}: {shown}{f'; and {more} more' if more > 0 else ''} "
                       f"(data.on_bad_image=skip leaves them out and lists them in skipped.csv)")
