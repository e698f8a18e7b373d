"""A labelled set of pictures with words in them, made on the spot (no file leaves the machine).

Three kinds, each a PNG or JPEG file named ``<kind>_<n>``:
- ``sign``: a photo-like background (smooth colour, blobs, noise) with a plate carrying one word or
  code, at several sizes and angles, on pictures of several sizes;
- ``screen``: a phone screenshot (1170 x 2532) with lines of small text, one of them the key;
- ``plain``: photo-like backgrounds without words.

``make_word_images(folder)`` writes them and returns ``{path: key}`` (``key`` is "" for a plain one): a
search for the key, in words, should bring that picture first. Used by tests/test_ocr.py and
benchmarks/bench_ocr.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["KEYS", "SCREEN_LINES", "make_word_images", "photo_background", "sign_picture"]

# Each key occurs in one picture only: words of signs, codes, numbers
KEYS = ["BAKERY", "PHARMACY", "Station", "MUSEUM", "Harbour", "LIBRARY", "GARAGE", "Cinema", "HOTEL",
        "Bistro", "MARKET", "STADIUM", "48213", "QX81ZR", "Gate B12", "Platform 7", "EXIT", "Florist",
        "tulip7392", "INVOICE 5531", "Zoo", "Tram 14", "Sushi", "Parking"]
SCREEN_LINES = ["Settings", "Wi-Fi network", "Battery 82%", "Bluetooth on", "Notifications"]
SIZES = [(640, 480), (1024, 768), (1600, 1200), (768, 1024)]
FONT_SIZES = [28, 40, 64, 96]
ANGLES = [0, -8, 12, -18, 5, 20]


def photo_background(size: tuple[int, int], seed: int) -> Image.Image:
    """A picture that looks like a blurred photo: a colour gradient, a few soft blobs, fine noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    top, bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1))
    img = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y, r = rng.integers(0, width), rng.integers(0, height), rng.integers(width // 12, width // 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(width / 80))
    noise = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def sign_picture(word: str, size: tuple[int, int], font_size: int, angle: float, seed: int) -> Image.Image:
    """``word`` on a plate (dark on light, or light on dark), turned by ``angle`` degrees and pasted on a
    photo-like background of ``size``."""
    rng = random.Random(seed)
    font = ImageFont.load_default(font_size)
    left, top, right, bottom = font.getbbox(word)
    pad = font_size // 2
    dark = rng.random() < 0.5
    plate = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (30, 40, 60) if dark else (245, 240, 225))
    ImageDraw.Draw(plate).text((pad - left, pad - top), word, font=font, fill=(250, 250, 250) if dark else (20, 20, 20))
    mask = Image.new("L", plate.size, 255).rotate(angle, expand=True)
    plate = plate.rotate(angle, expand=True)
    picture = photo_background(size, seed)
    x = rng.randint(0, max(0, size[0] - plate.width))
    y = rng.randint(0, max(0, size[1] - plate.height))
    picture.paste(plate, (x, y), mask)
    return picture


def screenshot(key: str, seed: int) -> Image.Image:
    """A phone screenshot: a title bar and lines of 44-pixel text, the key among them."""
    rng = random.Random(seed)
    img = Image.new("RGB", (1170, 2532), (242, 242, 247))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 1170, 160), fill=(28, 110, 220))
    font = ImageFont.load_default(44)
    lines = rng.sample(SCREEN_LINES, 3)
    lines.insert(rng.randint(0, 3), key)
    for i, line in enumerate(lines):
        draw.text((70, 320 + i * 220), line, font=font, fill=(25, 25, 25))
    return img


def make_word_images(folder: Path, keys: list[str] = KEYS, screens: int = 4, plain: int = 6) -> dict[Path, str]:
    """Write the set into ``folder``: one sign per key but the last ``screens`` keys, which are shown on
    screenshots; ``plain`` pictures without words. Returns ``{path: key}`` ("" for a plain picture)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for n, key in enumerate(keys):
        if n >= len(keys) - screens:
            path = folder / f"screen_{n:02d}.png"
            screenshot(key, n).save(path)
        else:
            picture = sign_picture(key, SIZES[n % len(SIZES)], FONT_SIZES[n // 4 % len(FONT_SIZES)], ANGLES[n % len(ANGLES)], n)
            path = folder / f"sign_{n:02d}.jpg"
            picture.save(path, quality=90)
        found[path] = key
    for n in range(plain):
        path = folder / f"plain_{n:02d}.jpg"
        photo_background(SIZES[n % len(SIZES)], 100 + n).save(path, quality=90)
        found[path] = ""
    return found
