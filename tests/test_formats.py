"""A real photo library: iPhone (HEIC), AVIF and camera RAW files indexed like any other image, a
RAW + JPEG pair indexed once, a missing decoder named, hidden and system folders left out.

Every file is written here by the libraries themselves (pillow-heif, Pillow, pidng)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import shapes_folder
from textimg_helpers import data

HAS_RAWPY = importlib.util.find_spec("rawpy") is not None
HAS_PIDNG = importlib.util.find_spec("pidng") is not None


def write_dng(path, rgb=(4000, 200, 100), size=(64, 96)) -> None:
    """A small uncompressed DNG (an RGGB sensor of one colour), as a camera would write it."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import (CalibrationIlluminant, CFAPattern, DNGVersion, Orientation, PhotometricInterpretation,
                            PreviewColorSpace)

    h, w = size
    bayer = np.zeros((h, w), dtype=np.uint16)
    bayer[0::2, 0::2], bayer[0::2, 1::2], bayer[1::2, 0::2], bayer[1::2, 1::2] = rgb[0], rgb[1], rgb[1], rgb[2]
    tags = DNGTags()
    for tag, value in [(Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, Orientation.Horizontal),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                       (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.CFARepeatPatternDim, [2, 2]),
                       (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095),
                       (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
                       (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.AsShotNeutral, [[1, 1]] * 3),
                       (Tag.BaselineExposure, [[0, 100]]), (Tag.Make, "Test"), (Tag.Model, "Camera"),
                       (Tag.DNGVersion, DNGVersion.V1_4), (Tag.PreviewColorSpace, PreviewColorSpace.sRGB)]:
        tags.set(tag, value)
    converter = RAW2DNG()
    converter.options(tags, path="", compress=False)
    converter.convert(bayer, filename=str(path.with_suffix("")))


@pytest.fixture
def phone_folder(tmp_path):
    """The shapes as a phone export: red circles as HEIC and AVIF, the rest as JPEG (40 photos)."""
    shapes = shapes_folder(tmp_path / "shapes", per_class=1)
    folder = tmp_path / "phone"
    folder.mkdir()
    for path in sorted(shapes.iterdir()):
        img = Image.open(path).convert("RGB")
        if path.stem.startswith("red_circle"):
            img.save(folder / "IMG_0001.HEIC", quality=95)
            img.save(folder / "IMG_0002.avif", quality=95)
        else:
            img.save(folder / f"{path.stem}.jpg", quality=95)
    return folder


def test_heic_and_avif_photos_are_indexed_and_found(cli, phone_folder, tmp_path):
    assert data.load_image(phone_folder / "IMG_0001.HEIC").size == (64, 64)
    run = cli("index", phone_folder, "--uri", tmp_path / "m.db", "-q")
    assert run.code == 0 and run.summary == {"indexed": 41, "skipped": 0, "unchanged": 0, "total": 41}, run.err
    hits = json.loads(cli("search", "a red circle", "--uri", tmp_path / "m.db", "-k", "2", "--json").out)
    assert {hit["filepath"].rsplit("/", 1)[1] for hit in hits} == {"IMG_0001.HEIC", "IMG_0002.avif"}


@pytest.mark.skipif(not (HAS_RAWPY and HAS_PIDNG), reason="rawpy and pidng are needed: pip install -e '.[dev]'")
def test_a_raw_file_is_indexed_and_a_raw_jpeg_pair_once(cli, tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    write_dng(folder / "DSC_0001.dng")
    write_dng(folder / "DSC_0002.dng")
    Image.new("RGB", (64, 64), (255, 0, 0)).save(folder / "DSC_0002.JPG")  # the camera's JPEG of the same shot
    img = data.load_image(folder / "DSC_0001.dng")
    assert img.mode == "RGB" and img.getpixel((5, 5))[0] > 200 > img.getpixel((5, 5))[1]  # red, demosaiced
    run = cli("index", folder, "--uri", tmp_path / "m.db")
    assert run.code == 0 and run.summary == {"indexed": 2, "skipped": 1, "unchanged": 0, "total": 2}, run.err
    assert f"skipped {folder / 'DSC_0002.dng'}: RAW file beside DSC_0002.JPG: one photo, indexed from DSC_0002.JPG" \
        in run.out


class WithPreview:
    """A real rawpy file whose ``extract_thumb`` gives a JPEG preview (pidng writes DNGs without one)."""

    def __init__(self, raw, preview: bytes):
        self.raw, self.preview = raw, preview

    def __enter__(self):
        self.raw.__enter__()
        return self

    def __exit__(self, *exc):
        return self.raw.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def extract_thumb(self):
        import rawpy

        return type("Thumb", (), {"format": rawpy.ThumbFormat.JPEG, "data": self.preview})()


@pytest.mark.skipif(not (HAS_RAWPY and HAS_PIDNG), reason="rawpy and pidng are needed: pip install -e '.[dev]'")
def test_a_raw_file_with_a_preview_is_read_from_the_preview(tmp_path, monkeypatch):
    """The embedded JPEG preview is decoded (fast) instead of the sensor data: here the sensor data
    is red and the preview blue, so the colour tells which was read."""
    import io

    import rawpy

    write_dng(tmp_path / "DSC_0004.dng")
    jpeg = io.BytesIO()
    Image.new("RGB", (300, 200), (0, 0, 255)).save(jpeg, "JPEG")
    real_imread = rawpy.imread
    monkeypatch.setattr(rawpy, "imread", lambda path: WithPreview(real_imread(path), jpeg.getvalue()))
    img = data.load_image(tmp_path / "DSC_0004.dng")
    red, green, blue = img.getpixel((5, 5))
    assert blue > 200 > red and img.size == (300, 200)
    small = data.load_image(tmp_path / "DSC_0004.dng", max_side=64)
    assert min(small.size) >= 64 and small.width < 300 and small.getpixel((5, 5))[2] > 200  # decoded at reduced scale


def test_a_format_whose_decoder_is_missing_is_skipped_with_the_extra_to_install(cli, phone_folder, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(data, "HEIF_SUPPORT", False)
    (phone_folder / "DSC_0003.nef").write_bytes(b"\0" * 64)
    monkeypatch.setitem(__import__("sys").modules, "rawpy", None)  # not installed
    run = cli("index", phone_folder, "--uri", tmp_path / "m.db")
    assert run.code == 0 and run.summary["skipped"] == 2, run.out + run.err
    assert (f"skipped {phone_folder / 'IMG_0001.HEIC'}: UnreadableImage: HEIC/HEIF photos need pillow-heif, which is "
            "not installed: pip install pillow-heif") in run.out
    assert (f"skipped {phone_folder / 'DSC_0003.nef'}: UnreadableImage: RAW photos need rawpy, which is not "
            'installed: pip install "textimg-helpers[raw]"') in run.out


def test_hidden_and_system_folders_are_left_out_unless_asked(cli, tmp_path):
    folder = shapes_folder(tmp_path / "photos", per_class=1)  # 40 images
    for cache in (".thumbnails", "@eaDir/x", "#recycle", "$RECYCLE.BIN", "System Volume Information", "node_modules"):
        (folder / cache).mkdir(parents=True)
        shutil.copy(folder / "red_circle_0000.png", folder / cache / "copy.png")
    shutil.copy(folder / "red_circle_0000.png", folder / ".hidden.png")
    (folder / "private").mkdir()
    shutil.copy(folder / "red_circle_0000.png", folder / "private" / "secret.png")
    db = tmp_path / "m.db"
    assert cli("index", folder, "--uri", db, "-q", "--exclude", "private").summary["total"] == 40
    assert cli("index", folder, "--uri", db, "-q").summary["total"] == 41  # private/ is back
    everything = cli("index", folder, "--uri", db, "-q", "--include-hidden", "--exclude", "private/*")
    assert everything.summary["total"] == 40 + 6 + 1  # the six system folders' copies and .hidden.png
    back = cli("index", folder, "--uri", db, "-q")
    assert back.summary["total"] == 41  # their rows removed again, as files no longer listed


def test_exclude_globs_match_relative_paths():
    from pathlib import Path

    root = Path("/photos")
    kept = lambda rel, *globs: data._kept(root, root / rel, False, globs)  # noqa: E731
    assert not kept("private/a.jpg", "private/*") and not kept("a/b.gif", "*.gif") and kept("a/b.jpg", "*.gif")
    assert not kept(".a.jpg") and kept("a.jpg")
    assert not data._kept(root, root / ".thumbnails", False, (), folder=True)
    assert not data._kept(root, root / "@eaDir", False, (), folder=True)
    assert data._kept(root, root / "@eaDir", True, (), folder=True)
