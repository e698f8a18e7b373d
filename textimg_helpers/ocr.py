"""Words in pictures (OCR): an image file -> the words written in it, as one line of text.

RapidOCR runs PaddleOCR's PP-OCR models (shipped inside the ``rapidocr`` wheel, so nothing is
downloaded) with onnxruntime: a detector finds where text is, a recogniser reads each place it found.
The detector runs on a reduced copy of the image (``DETECT_PIXELS``), and the recogniser only where the
detector found text, so a photo without words costs one small forward pass. onnxruntime uses every core.

The shipped models read Latin letters (English, French, German...), digits and Chinese (simplified and
traditional); for other scripts RapidOCR takes other recognition models (``Rec.lang_type``), see
docs/cli.md. ``rapidocr`` is the ``ocr`` extra (``pip install -e ".[ocr]"``), imported only when
words are read.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import TextimgError
from .data import MAX_JPEG_PIXELS, to_rgb

__all__ = ["DETECT_PIXELS", "OCR_MISSING", "READ_SIDE", "WordReader", "check_ocr", "ocr_available", "words_image"]

OCR_MISSING = 'reading the words in images needs the ocr extra, which is not installed: pip install "textimg-helpers[ocr]"'
READ_SIDE = 1600  # the longest side of the copy the recogniser crops words from (a phone photo is 4032)
DETECT_PIXELS = 400 * 300  # the detector's copy has at most this many pixels (one small forward pass)
MIN_SCORE = 0.5  # words read with less confidence are left out
MAX_BYTES = 8192  # the stored text field's length (store.MAX_TEXT), in UTF-8 bytes


def ocr_available() -> bool:
    """True when ``rapidocr`` and ``onnxruntime`` are installed (nothing is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("rapidocr", "onnxruntime"))


def check_ocr() -> None:
    """One ``TextimgError`` saying what to install when the OCR engine is missing."""
    if not ocr_available():
        raise TextimgError(OCR_MISSING)


def words_image(path: str | os.PathLike, side: int = READ_SIDE, pixels: int | None = None) -> Image.Image:
    """The image at ``path`` as RGB, EXIF rotation applied, its longest side at most ``side`` and (with
    ``pixels``) its area at most that (a JPEG is decoded at a reduced scale: a 12 Mpx photo costs little).
    Unlike ``data.load_image`` nothing is cropped: words sit anywhere, also at the top of a screenshot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.width * img.height > MAX_JPEG_PIXELS:
                raise ValueError(f"{img.width}x{img.height} is too large to read words from")
            size = reduced_size(img.size, side, pixels)
            if img.format == "JPEG":
                img.draft("RGB", size)
            img.load()
            img = to_rgb(ImageOps.exif_transpose(img))
    size = reduced_size(img.size, side, pixels)
    return img if size == img.size else img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def reduced_size(size: tuple[int, int], side: int, pixels: int | None = None) -> tuple[int, int]:
    """``size`` scaled down (never up) to a longest side of ``side`` and an area of ``pixels``."""
    width, height = size
    scale = min(1.0, side / max(width, height), (pixels / (width * height)) ** 0.5 if pixels else 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


class WordReader:
    """Reads the words of images: the detector looks at a copy of at most ``detect_pixels`` pixels; only
    where it finds text does the recogniser read, from a copy whose longest side is ``read_side``. The
    models load on the first image (``rapidocr`` is imported then)."""

    def __init__(self, detect_pixels: int = DETECT_PIXELS, read_side: int = READ_SIDE, min_score: float = MIN_SCORE):
        self.detect_pixels, self.read_side, self.min_score = detect_pixels, read_side, min_score
        self._engine = None

    @property
    def engine(self):
        """RapidOCR, made on first use (its detector takes our reduced copy as it is: no resizing of its own)."""
        if self._engine is None:
            check_ocr()
            from rapidocr import RapidOCR

            self._engine = RapidOCR(params={"Global.log_level": "error", "Det.limit_type": "max",
                                            "Det.limit_side_len": 4096,
                                            "EngineConfig.onnxruntime.enable_cpu_mem_arena": True})
        return self._engine

    def find_text(self, image: Image.Image) -> np.ndarray:
        """Where the detector sees text in ``image``: boxes of 4 corners, shape (n, 4, 2), in its pixels."""
        found = self.engine._load_det_model()(bgr(image))
        return np.zeros((0, 4, 2), np.float32) if found.boxes is None else np.asarray(found.boxes, np.float32)

    def read_boxes(self, image: Image.Image, boxes: np.ndarray) -> str:
        """The words in ``boxes`` of ``image``, in the order of the boxes, joined by spaces."""
        from rapidocr.ch_ppocr_rec import TextRecInput
        from rapidocr.utils.process_img import get_rotate_crop_image

        pixels = bgr(image)
        crops = [get_rotate_crop_image(pixels, box.astype(np.float32)) for box in boxes]
        read = self.engine._load_rec_model()(TextRecInput(img=crops))
        texts = [t.strip() for t, score in zip(read.txts or (), read.scores) if score >= self.min_score]
        return " ".join(t for t in texts if t).encode("utf-8")[:MAX_BYTES].decode("utf-8", "ignore")

    def read_image(self, image: Image.Image) -> str:
        """The words in ``image`` (PIL), top to bottom ("" when none): detected on a reduced copy, read
        from ``image`` itself."""
        small = image.resize(reduced_size(image.size, max(image.size), self.detect_pixels), Image.Resampling.BILINEAR)
        boxes = self.find_text(small)
        return self.read_boxes(image, boxes * np.float32(image.width / small.width)) if len(boxes) else ""

    def read_file(self, path: str | os.PathLike) -> str:
        """The words in the image file at ``path``: a small decode for the detector, and a larger one
        (``read_side``) only when it found text."""
        small = words_image(Path(path), self.read_side, self.detect_pixels)
        boxes = self.find_text(small)
        if not len(boxes):
            return ""
        full = words_image(Path(path), self.read_side)
        return self.read_boxes(full, boxes * np.float32(full.width / small.width))


def bgr(image: Image.Image) -> np.ndarray:
    """A PIL image as the BGR uint8 array (h, w, 3) that OpenCV and RapidOCR take."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
