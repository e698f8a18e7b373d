"""Generator of small images of coloured shapes, used to train and test the offline "shapes" CLIP."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASS_NAMES", "COLOURS", "SHAPES", "TRAIN_SEED", "draw_shape", "generate_shapes",
           "label_from_filename"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "orange": (245, 130, 20),
    "purple": (140, 40, 180),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

CLASS_NAMES: list[str] = [f"{colour}_{shape}" for colour in COLOURS for shape in SHAPES]

TRAIN_SEED = 0

_SUPERSAMPLE = 4
_MIN_COLOUR_DISTANCE = 120.0
_FILENAME_RE = re.compile(r"^(?P<label>[a-z]+_[a-z]+)_\d+$")


def _luminance(rgb: tuple[float, float, float] | np.ndarray) -> float:
    """Return the perceived brightness (0-255) of an RGB colour."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _jitter_colour(rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Return the colour with a slight random per-channel jitter."""
    return np.clip(np.asarray(rgb, dtype=np.float64) + rng.uniform(-12, 12, 3), 0, 255)


def _contrasts(background: np.ndarray, colour: str) -> bool:
    """Tell whether a background colour contrasts enough with a shape colour."""
    shape_rgb = np.asarray(COLOURS[colour], dtype=np.float64)
    if np.linalg.norm(background - shape_rgb) < _MIN_COLOUR_DISTANCE:
        return False
    if colour == "white" and _luminance(background) > 160:
        return False
    return not (colour == "black" and _luminance(background) < 95)


def _background_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
    """Pick a muted, slightly tinted grey that contrasts with the shape colour."""
    while True:
        grey = rng.uniform(40, 225)
        tint = rng.normal(0, 1, 3)
        tint *= rng.uniform(0, 30) / max(np.linalg.norm(tint), 1e-6)
        candidate = np.clip(grey + tint, 0, 255)
        if _contrasts(candidate, colour):
            return candidate


def _background(colour: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Return a (size, size, 3) float background: flat or gradient, optionally noisy."""
    first = _background_colour(colour, rng)
    second = first
    if rng.random() < 0.5:
        second = np.clip(first + rng.uniform(-40, 40) + rng.uniform(-10, 10, 3), 0, 255)
        if not _contrasts(second, colour):
            second = first
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle) + 1.5) / 3.0
    image = first + ramp[..., None] * (second - first)
    if rng.random() < 0.5:
        image = image + rng.normal(0, rng.uniform(2, 8), image.shape)
    return image


def _regular_polygon(n: int, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Return the vertices of a regular n-gon of circumradius r rotated by angle."""
    return [
        (cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _star(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Return the vertices of a five-pointed star of outer radius r."""
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else 0.42 * r
        theta = angle + math.pi * k / 5
        points.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
    return points


def _cross(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Return the vertices of a plus-shaped cross of half-length r rotated by angle."""
    w = 0.32 * r
    base = [(w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r),
            (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r)]
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return [(cx + x * cos_a - y * sin_a, cy + x * sin_a + y * cos_a) for x, y in base]


def _shape_mask(shape: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Return an anti-aliased (size, size) alpha mask in [0, 1] for a randomly placed shape."""
    big = size * _SUPERSAMPLE
    r = rng.uniform(0.15, 0.40) * big
    cx, cy = rng.uniform(r + 1, big - r - 1, 2)
    angle = rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        draw.polygon(_regular_polygon(4, cx, cy, r, angle), fill=255)
    elif shape == "triangle":
        draw.polygon(_regular_polygon(3, cx, cy, r, angle), fill=255)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r, angle), fill=255)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, r, angle), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0


def draw_shape(colour: str, shape: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """Draw one `colour` `shape` on a random contrasting background as an RGB image."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {tuple(COLOURS)}")
    background = _background(colour, rng, size)
    alpha = _shape_mask(shape, rng, size)[..., None]
    fill = _jitter_colour(COLOURS[colour], rng)
    pixels = background * (1 - alpha) + fill * alpha
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def _image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """Return the random generator of one image, independent of the other images."""
    return np.random.default_rng([seed, class_index, index])


def generate_shapes(folder: str | Path, per_class: int = 10, seed: int = 2024, size: int = 96) -> list[Path]:
    """Write per_class PNGs of every class into folder (skipping existing ones) and return their sorted paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for class_index, label in enumerate(CLASS_NAMES):
        colour, shape = label.split("_")
        for index in range(per_class):
            path = folder / f"{label}_{index:04d}.png"
            if not path.exists():
                draw_shape(colour, shape, _image_rng(seed, class_index, index), size).save(path)
            paths.append(path)
    return sorted(paths)


def label_from_filename(path: str | Path) -> str:
    """Return the class label ("red_circle") encoded in a generated file name."""
    match = _FILENAME_RE.match(Path(path).stem)
    if match is None:
        raise ValueError(f"not a generated shape file name: {path}")
    return match.group("label")
