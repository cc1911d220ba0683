"""Procedurally generated image datasets (docs/data.md: the built-in data).

Two families of classes:

* ``shapes``: one main geometric shape per image (random size, position, rotation,
  colour), on a noisy gradient background with smaller distractor shapes and an
  optional occluding bar. The label is the class of the *largest* shape.
* ``textures``: a whole-image texture (stripes, checkerboard, dots, ...) with random
  frequency, orientation, colours and noise. Textures share only low-level features
  (edges, colour blobs, frequencies) with shapes.

Everything is vectorised over a batch of images and rendered at ``supersample`` times
the target resolution, then box-filtered down (anti-aliasing). Each (dataset, split,
class) gets its own ``numpy`` generator seeded from a ``SeedSequence``, so the same seed
gives byte-identical arrays and changing one split's size never changes another split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "hexagon",
    "semicircle",
    "ellipse",
    "diamond",
    "frame",
    "crescent",
    "tee",
    "pentagon",
)
TEXTURES = ("stripes", "checker", "dots", "waves", "blobs", "grid")
FAMILIES = {"shapes": SHAPES, "textures": TEXTURES}


@dataclass(frozen=True)
class RenderParams:
    """Difficulty knobs; ranges are (low, high) sampled uniformly per image.

    The values live in conf/experiment/builtin.yaml (`render`) and params.yaml (`image_size`).
    """

    image_size: int
    supersample: int
    object_radius: tuple[float, float]
    distractors: tuple[int, int]
    distractor_scale: tuple[float, float]
    occlusion_prob: float
    noise_std: tuple[float, float]
    contrast: tuple[float, float]
    texture_frequency: tuple[float, float]


def render_params(render: dict, image_size: int) -> RenderParams:
    """RenderParams from a config's `render` block (lists become tuples)."""
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in render.items()}
    return RenderParams(image_size=image_size, **values)


def _polar(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(u, v), np.arctan2(v, u)


def _regular_polygon(u, v, sides: int) -> np.ndarray:
    rho, phi = _polar(u, v)
    sector = 2 * np.pi / sides
    edge = np.cos(np.pi / sides) / np.cos(np.mod(phi, sector) - np.pi / sides)
    return rho <= edge


def _star(u, v) -> np.ndarray:
    rho, phi = _polar(u, v)
    t = np.mod(phi * 5 / (2 * np.pi), 1.0)
    return rho <= 0.42 + 0.58 * np.abs(2 * t - 1) ** 1.6


# Each mask takes shape-local coordinates (unit radius, centred, unrotated). None is
# chiral, so flips used as augmentation keep the label.
SHAPE_MASKS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.78,
    "triangle": lambda u, v: _regular_polygon(u, v, 3),
    "star": _star,
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0)),
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55**2),
    "hexagon": lambda u, v: _regular_polygon(u, v, 6),
    "semicircle": lambda u, v: (u * u + v * v <= 1.0) & (v >= -0.15),
    "ellipse": lambda u, v: u * u + (v / 0.5) ** 2 <= 1.0,
    "diamond": lambda u, v: np.abs(u) / 0.55 + np.abs(v) <= 1.0,
    "frame": lambda u, v: (np.maximum(np.abs(u), np.abs(v)) <= 0.82) & (np.maximum(np.abs(u), np.abs(v)) >= 0.5),
    "crescent": lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v >= 0.8**2),
    "tee": lambda u, v: (
        ((np.abs(u) <= 0.9) & (v >= 0.45) & (v <= 0.9)) | ((np.abs(u) <= 0.25) & (v >= -0.9) & (v <= 0.9))
    ),
    "pentagon": lambda u, v: _regular_polygon(u, v, 5),
}


def _uniform(rng: np.random.Generator, bounds, n: int) -> np.ndarray:
    low, high = bounds
    return rng.uniform(low, high, size=(n, 1, 1))


def _grid(params: RenderParams) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of the supersampled canvas, in output-pixel units."""
    side = params.image_size * params.supersample
    axis = (np.arange(side, dtype=np.float64) + 0.5) / params.supersample
    ys, xs = np.meshgrid(axis, axis, indexing="ij")
    return xs[None], ys[None]


def _local(xs, ys, cx, cy, radius, angle) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = xs - cx, ys - cy
    cos, sin = np.cos(angle), np.sin(angle)
    return (dx * cos + dy * sin) / radius, (-dx * sin + dy * cos) / radius


def _random_colours(rng, n: int) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=(n, 1, 1, 3))


def _contrasting(rng, base: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """A colour at a random direction from ``base``, ``contrast`` away, clipped to [0, 1]."""
    direction = rng.normal(size=base.shape)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True) + 1e-9
    return np.clip(base + direction * contrast[..., None] * np.sqrt(3) * 0.6, 0.0, 1.0)


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    canvas[:] = np.where(mask[..., None], colour, canvas)


def _background(rng, xs, ys, n: int, params: RenderParams) -> np.ndarray:
    c0, c1 = _random_colours(rng, n), _random_colours(rng, n)
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    ramp = (xs * np.cos(angle) + ys * np.sin(angle)) / params.image_size
    ramp = (ramp - ramp.min(axis=(1, 2), keepdims=True)) / (np.ptp(ramp, axis=(1, 2), keepdims=True) + 1e-9)
    return c0 + (c1 - c0) * ramp[..., None] * 0.6


def _draw_shape(rng, canvas, xs, ys, kinds: np.ndarray, cx, cy, radius, colour) -> None:
    angle = rng.uniform(0, 2 * np.pi, size=(len(kinds), 1, 1))
    u, v = _local(xs, ys, cx, cy, radius, angle)
    for kind in np.unique(kinds):
        rows = np.flatnonzero(kinds == kind)
        mask = SHAPE_MASKS[str(kind)](u[rows], v[rows])
        sub = canvas[rows]
        _paint(sub, mask, colour[rows])
        canvas[rows] = sub


def _render_shapes(rng, label: str, n: int, params: RenderParams) -> np.ndarray:
    xs, ys = _grid(params)
    size = params.image_size
    canvas = _background(rng, xs, ys, n, params)
    mean_bg = canvas.mean(axis=(1, 2), keepdims=True)

    radius = _uniform(rng, params.object_radius, n)
    margin = radius * 0.6
    cx = rng.uniform(0, 1, size=(n, 1, 1)) * (size - 2 * margin) + margin
    cy = rng.uniform(0, 1, size=(n, 1, 1)) * (size - 2 * margin) + margin

    # Distractors first, so the main shape is drawn on top of them.
    n_distractors = rng.integers(params.distractors[0], params.distractors[1] + 1, size=n)
    for slot in range(params.distractors[1]):
        present = n_distractors > slot
        kinds = rng.choice(np.array(SHAPES), size=n)
        d_radius = radius * _uniform(rng, params.distractor_scale, n)
        dx = rng.uniform(0, size, size=(n, 1, 1))
        dy = rng.uniform(0, size, size=(n, 1, 1))
        colour = _contrasting(rng, mean_bg, _uniform(rng, params.contrast, n))
        rows = np.flatnonzero(present)
        if rows.size:
            sub = canvas[rows]
            _draw_shape(rng, sub, xs, ys, kinds[rows], dx[rows], dy[rows], d_radius[rows], colour[rows])
            canvas[rows] = sub

    colour = _contrasting(rng, mean_bg, _uniform(rng, params.contrast, n))
    _draw_shape(rng, canvas, xs, ys, np.full(n, label), cx, cy, radius, colour)

    # Occluding bar across part of the main shape.
    occluded = rng.uniform(size=n) < params.occlusion_prob
    rows = np.flatnonzero(occluded)
    if rows.size:
        angle = rng.uniform(0, np.pi, size=(rows.size, 1, 1))
        offset = rng.uniform(-0.9, 0.9, size=(rows.size, 1, 1)) * radius[rows]
        width = rng.uniform(0.15, 0.35, size=(rows.size, 1, 1)) * radius[rows]
        u, v = _local(xs, ys, cx[rows], cy[rows], 1.0, angle)
        bar = np.abs(v - offset) <= width
        sub = canvas[rows]
        _paint(sub, bar, _random_colours(rng, rows.size))
        canvas[rows] = sub
    return canvas


def _smooth_noise(rng, n: int, side: int, cutoff: np.ndarray) -> np.ndarray:
    """Gaussian-low-passed white noise, normalised to zero mean / unit std per image."""
    white = rng.normal(size=(n, side, side))
    freq = np.fft.fftfreq(side)
    f2 = freq[None, :, None] ** 2 + freq[None, None, :] ** 2
    filt = np.exp(-f2 / (2 * cutoff**2))
    field = np.real(np.fft.ifft2(np.fft.fft2(white) * filt))
    field -= field.mean(axis=(1, 2), keepdims=True)
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-9)


def _texture_field(rng, label: str, xs, ys, n: int, params: RenderParams) -> np.ndarray:
    """A texture intensity in [0, 1] for each pixel."""
    freq = _uniform(rng, params.texture_frequency, n)
    angle = rng.uniform(0, np.pi, size=(n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    u, v = _local(xs, ys, 0.0, 0.0, 1.0, angle)
    soft = lambda t: 1 / (1 + np.exp(-4 * t))  # noqa: E731 - a soft square wave edge
    if label == "stripes":
        return soft(np.sin(2 * np.pi * freq * u + phase))
    if label == "checker":
        return soft(np.sin(2 * np.pi * freq * u + phase) * np.sin(2 * np.pi * freq * v + phase))
    if label == "grid":
        lines = np.minimum(np.abs(np.sin(np.pi * freq * u + phase)), np.abs(np.sin(np.pi * freq * v + phase)))
        return soft(3 * (0.35 - lines))
    if label == "dots":
        fu = np.mod(freq * u + phase / (2 * np.pi), 1.0) - 0.5
        fv = np.mod(freq * v + phase / (2 * np.pi), 1.0) - 0.5
        radius = rng.uniform(0.18, 0.32, size=(n, 1, 1))
        return soft(40 * (radius**2 - fu * fu - fv * fv))
    if label == "waves":
        amplitude = rng.uniform(1.5, 4.0, size=(n, 1, 1))
        wobble = rng.uniform(0.05, 0.12, size=(n, 1, 1))
        return soft(np.sin(2 * np.pi * freq * (u + amplitude * np.sin(2 * np.pi * wobble * v)) + phase))
    if label == "blobs":
        side = xs.shape[-1]
        cutoff = rng.uniform(0.02, 0.05, size=(n, 1, 1)) * (32 / params.image_size)
        return soft(2 * _smooth_noise(rng, n, side, cutoff / params.supersample))
    raise ValueError(f"unknown texture {label!r} (allowed: {', '.join(TEXTURES)})")


def _render_textures(rng, label: str, n: int, params: RenderParams) -> np.ndarray:
    xs, ys = _grid(params)
    field = _texture_field(rng, label, xs, ys, n, params)
    c0 = _random_colours(rng, n)
    c1 = _contrasting(rng, c0, _uniform(rng, params.contrast, n))
    return c0 + (c1 - c0) * field[..., None]


def _finish(rng, canvas: np.ndarray, params: RenderParams) -> np.ndarray:
    """Box-filter down to the output size, add pixel noise, quantise to uint8."""
    n, side = canvas.shape[0], params.image_size
    s = params.supersample
    small = canvas.reshape(n, side, s, side, s, 3).mean(axis=(2, 4))
    small += rng.normal(size=small.shape) * _uniform(rng, params.noise_std, n)[..., None]
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def render_class(
    family: str, label: str, n: int, seed_words: list[int], params: RenderParams, chunk: int = 256
) -> np.ndarray:
    """``n`` images of one class as a uint8 array (n, H, W, 3), deterministic in ``seed_words``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (allowed: {', '.join(FAMILIES)})")
    if label not in FAMILIES[family]:
        raise ValueError(f"unknown {family} class {label!r} (allowed: {', '.join(FAMILIES[family])})")
    render = _render_shapes if family == "shapes" else _render_textures
    rng = np.random.default_rng(np.random.SeedSequence(seed_words))
    out = np.empty((n, params.image_size, params.image_size, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        canvas = render(rng, label, stop - start, params)
        out[start:stop] = _finish(rng, canvas, params)
    return out


def _render_task(task: tuple) -> np.ndarray:
    return render_class(*task)


def make_split(
    family: str, classes: list[str], per_class: int, seed_words: list[int], params: RenderParams, pool=None
) -> tuple[np.ndarray, np.ndarray]:
    """A shuffled split: images (N, H, W, 3) uint8 and labels (N,) int64. Classes are rendered
    independently (each from its own seed), in ``pool``'s worker processes when one is given."""
    tasks = [(family, label, per_class, [*seed_words, index], params) for index, label in enumerate(classes)]
    images = list(pool.imap(_render_task, tasks)) if pool is not None else [_render_task(t) for t in tasks]
    labels = [np.full(per_class, index, dtype=np.int64) for index in range(len(classes))]
    x, y = np.concatenate(images), np.concatenate(labels)
    order = np.random.default_rng(np.random.SeedSequence([*seed_words, 10_000])).permutation(len(y))
    return x[order], y[order]
