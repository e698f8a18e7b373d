"""Bad and odd files: every readable image indexed once, every unreadable one skipped with its reason."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BLUE, RED, WHITE, noise, png_header_only, square, truncated
from textimg_helpers.data import UnreadableImage, list_image_paths, load_image

GREEN = (0, 200, 0)


def save_palette_with_transparency(path: Path) -> None:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, *RED])
    img.paste(1, (8, 8, 24, 24))
    img.save(path, transparency=0)  # index 0 (black) is transparent


def save_grey16(path: Path) -> None:
    import numpy as np

    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(path)  # 40000/65535 = grey 155


def save_animated_gif(path: Path) -> None:
    first, second = square("RGB", colour=RED), square("RGB", colour=BLUE)
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)


def save_exif_rotated(path: Path) -> None:
    """40x20 stored, red left / blue right, tagged "rotate 90 clockwise" (orientation 6)."""
    img = Image.new("RGB", (40, 20), RED)
    img.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif)


# name -> (writer, size after loading, {pixel: expected colour})
READABLE = {
    "rgba.png": (lambda p: square("RGBA", background=(0, 0, 0, 0)).save(p), (32, 32),
                 {(16, 16): RED, (1, 1): WHITE}),
    "palette.png": (save_palette_with_transparency, (32, 32), {(16, 16): RED, (1, 1): WHITE}),
    "grey16.png": (save_grey16, (32, 32), {(16, 16): (155, 155, 155)}),
    "grey.jpg": (lambda p: Image.new("L", (32, 32), 200).save(p), (32, 32), {(16, 16): (200, 200, 200)}),
    "cmyk.jpg": (lambda p: square("CMYK").save(p, quality=95), (32, 32), {(16, 16): RED, (1, 1): WHITE}),
    "animated.gif": (save_animated_gif, (32, 32), {(16, 16): RED, (1, 1): WHITE}),
    "image.webp": (lambda p: square().save(p, quality=95), (32, 32), {(16, 16): RED}),
    "image.bmp": (lambda p: square().save(p), (32, 32), {(16, 16): RED, (1, 1): WHITE}),
    "image.tiff": (lambda p: square().save(p), (32, 32), {(16, 16): RED, (1, 1): WHITE}),
    "rotated.jpg": (save_exif_rotated, (20, 40), {(10, 5): RED, (10, 35): BLUE}),
    "one_pixel.png": (lambda p: Image.new("RGB", (1, 1), GREEN).save(p), (1, 1), {(0, 0): GREEN}),
}

# name -> (writer, what the reason says)
UNREADABLE = {
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "error_page.png": (lambda p: p.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>"),
                       "text or HTML"),
    "notes.jpg": (lambda p: p.write_text("shopping list: milk, eggs\n"), "text or HTML"),
    "truncated.jpg": (lambda p: truncated(p, _saved(noise((64, 64)), p.with_suffix(".full.jpg"))),
                      "truncated image"),
    "truncated.png": (lambda p: truncated(p, _saved(noise((64, 64)), p.with_suffix(".full.png"))),
                      "truncated image"),
    "bomb.png": (lambda p: png_header_only(p, 20000, 20000), "decompression bomb"),
    "big_bomb.png": (lambda p: png_header_only(p, 9600, 9600), "decompression bomb"),  # over our 90 Mpx
    "garbage.webp": (lambda p: p.write_bytes(bytes(range(256)) * 4), "not an image format"),
}


def _saved(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


@pytest.mark.parametrize("name", READABLE)
def test_odd_images_load_as_rgb_looking_right(tmp_path, name):
    writer, size, pixels = READABLE[name]
    writer(tmp_path / name)
    img = load_image(tmp_path / name)
    assert img.mode == "RGB" and img.size == size
    for xy, colour in pixels.items():
        assert max(abs(a - b) for a, b in zip(img.getpixel(xy), colour)) <= 12, (xy, img.getpixel(xy))


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files_say_why(tmp_path, name):
    writer, reason = UNREADABLE[name]
    writer(tmp_path / name)
    with pytest.raises(UnreadableImage, match=re.escape(reason)):
        load_image(tmp_path / name, max_side=128)


def test_missing_file_is_not_called_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "gone.jpg")


def test_huge_photo_is_decoded_small_without_memory_blowup(tmp_path):
    """An 8000x5000 (40 Mpx) JPEG: full decoding peaks near 500 MB, draft decoding at a few MB."""
    Image.new("RGB", (8000, 5000), GREEN).save(tmp_path / "huge.jpg", quality=50)
    can_measure = sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)
    if can_measure:
        Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak memory (VmHWM)
    start = _memory_kb("VmRSS")
    img = load_image(tmp_path / "huge.jpg", max_side=128)
    assert img.size == (250, 156) or img.size == (250, 157)  # 1/8 scale, then reduced: still over max_side
    if can_measure:
        assert (_memory_kb("VmHWM") - start) / 1024 < 100, "decoding took more than 100 MB"


def _memory_kb(field: str) -> int:
    """A ``/proc/self/status`` memory figure in kB (0 where there is no /proc)."""
    if not Path("/proc/self/status").exists():
        return 0
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1])


def test_extreme_aspect_ratio_keeps_only_the_centre_for_encoding(tmp_path, shapes_encoder):
    """A 1x30000 strip would be resized to 64x1.9M pixels by CLIP's preprocessing; only its centre counts."""
    Image.new("RGB", (1, 30000), GREEN).save(tmp_path / "strip.png")
    assert load_image(tmp_path / "strip.png").size == (1, 30000)  # for display: untouched
    small = load_image(tmp_path / "strip.png", max_side=128)
    assert small.size == (1, 2)
    assert tuple(shapes_encoder.preprocess(small).shape) == (3, 64, 64)


def make_messy_folder(root: Path) -> tuple[set[str], dict[str, str]]:
    """Good images in every odd form, and bad files; returns (good paths, {bad path: reason})."""
    good = []

    def add(rel: str, writer) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        writer(root / rel)
        good.append(rel)

    for name, (writer, _, _) in READABLE.items():
        add(f"nested/odd/{name}", writer)
    add("Red Square.PNG", lambda p: square().save(p))  # upper-case extension, space
    add("scan.TIF", lambda p: square(colour=BLUE).save(p))
    add("café ☕/naïve 'quoted' \"name\".jpg", lambda p: square(colour=GREEN).save(p))
    add("strip 1x3000.png", lambda p: Image.new("RGB", (1, 3000), GREEN).save(p))
    add("wide 3000x1.png", lambda p: Image.new("RGB", (3000, 1), BLUE).save(p))
    add("big photo.JPG", lambda p: Image.new("RGB", (8000, 5000), GREEN).save(p, quality=50))
    add("dup_a.png", lambda p: noise(seed=7).save(p))
    add("copies/dup_b.png", lambda p: p.write_bytes((root / "dup_a.png").read_bytes()))
    add("folder.jpg/inside.png", lambda p: square(colour=BLUE).save(p))  # a directory named .jpg
    (root / "link to red.png").symlink_to(root / "Red Square.PNG")  # that file, once, under its real path
    (root / "nested" / "loop").symlink_to(root, target_is_directory=True)  # must not loop

    bad = {}
    (root / "bad").mkdir()
    for name, (writer, reason) in UNREADABLE.items():
        writer(root / "bad" / name)
        bad[f"bad/{name}"] = reason
    for leftover in (root / "bad").glob("*.full.*"):  # the intact sources of the truncated copies
        leftover.unlink()
    (root / "broken link.jpg").symlink_to(root / "nowhere.jpg")
    bad["broken link.jpg"] = "broken symbolic link"
    os.close(os.open(os.fsencode(root) + b"/latin1-\xe9t\xe9.png", os.O_CREAT | os.O_WRONLY))
    bad["latin1-\\xe9t\\xe9.png"] = "not valid UTF-8"  # shown with escapes; Milvus cannot store it
    (root / "readme.txt").write_text("not an image extension: ignored")
    return {str(root / rel) for rel in good}, {str(root / rel): why for rel, why in bad.items()}


def test_index_messy_folder_skips_bad_files_with_reasons(tmp_path, cli, shapes_encoder):
    root = tmp_path / "photos"
    good, bad = make_messy_folder(root)
    uri = tmp_path / "milvus.db"

    run = cli("index", root, "--uri", uri, "-q", "--batch-size", 8)
    assert run.code == 0, run.err
    skipped = dict(re.findall(r"^skipped (.+?): (.+)$", run.out, flags=re.M))
    assert set(skipped) == set(bad)
    for path, reason in bad.items():
        assert reason in skipped[path], (path, skipped[path])
    assert run.summary == {"indexed": len(good), "skipped": len(bad), "unchanged": 0, "total": len(good)}

    again = cli("index", root, "--uri", uri, "-q")
    assert again.summary == {"indexed": 0, "skipped": len(bad), "unchanged": len(good), "total": len(good)}

    hits = json.loads(cli("search", "a red square", "--uri", uri, "-k", 1000, "--json").out)
    paths = [hit["filepath"] for hit in hits]
    assert sorted(paths) == sorted(good)  # each good image exactly once, all findable
    score = {hit["filepath"]: hit["score"] for hit in hits}
    assert score[str(root / "dup_a.png")] == pytest.approx(score[str(root / "copies/dup_b.png")], abs=1e-5)


def test_listing_follows_symlinks_once_and_ignores_folders_named_like_images(tmp_path):
    (tmp_path / "a.jpg").mkdir()
    square().save(tmp_path / "a.jpg" / "b.PNG")
    (tmp_path / "a.jpg" / "up").symlink_to(tmp_path, target_is_directory=True)
    assert list_image_paths(tmp_path) == [tmp_path / "a.jpg" / "b.PNG"]


def test_decoder_processes_index_the_same_as_the_reader_thread(tmp_path, cli, shapes_encoder):
    """--workers 2 (DataLoader processes, the default on big machines) = the reader thread (the
    default here): same rows, same scores, same skipped files."""
    root = tmp_path / "photos"
    root.mkdir()
    for i, colour in enumerate((RED, BLUE, GREEN) * 4):
        square(colour=colour, size=(40 + i, 30)).save(root / f"img_{i:02d}.png")
    (root / "empty.jpg").write_bytes(b"")
    results = {}
    for workers in (0, 2):
        uri = tmp_path / f"w{workers}.db"
        run = cli("index", root, "--uri", uri, "-q", "--batch-size", 4, "--workers", workers)
        assert run.summary == {"indexed": 12, "skipped": 1, "unchanged": 0, "total": 12}, run.err
        assert f"skipped {root / 'empty.jpg'}: " in run.out
        hits = json.loads(cli("search", "a red square", "--uri", uri, "-k", 20, "--json").out)
        results[workers] = {hit["filepath"]: hit["score"] for hit in hits}
    assert results[0].keys() == results[2].keys() and len(results[0]) == 12
    for path, score in results[0].items():
        assert results[2][path] == pytest.approx(score, abs=1e-5)


def test_big_jpegs_have_a_higher_pixel_limit_than_other_formats(tmp_path, monkeypatch):
    """A 108 Mpx phone photo is a JPEG, decoded at 1/8 scale; a PNG that size is a possible bomb."""
    from textimg_helpers import data

    monkeypatch.setattr(data, "MAX_PIXELS", 1000)
    monkeypatch.setattr(data, "MAX_JPEG_PIXELS", 5000)
    square(size=(40, 40)).save(tmp_path / "photo.jpg")  # 1,600 pixels
    square(size=(40, 40)).save(tmp_path / "drawing.png")
    assert load_image(tmp_path / "photo.jpg", max_side=128).size == (40, 40)
    with pytest.raises(UnreadableImage, match="40x40 is 1,600 pixels, over the limit of 1,000 pixels for PNG files"):
        load_image(tmp_path / "drawing.png", max_side=128)


def test_the_pixel_limit_is_checked_on_the_header_before_decoding(tmp_path, monkeypatch):
    """A PNG whose header claims 100 million pixels is refused without decoding a byte of it."""
    from textimg_helpers import data

    png_header_only(tmp_path / "claims.png", 10_000, 10_000)  # a header and no pixel data
    decoded = []
    monkeypatch.setattr(data.Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(UnreadableImage, match="over the limit of 90,000,000 pixels for PNG files"):
        load_image(tmp_path / "claims.png", max_side=448)
    assert decoded == []


def test_a_large_png_is_reduced_as_it_is_decoded_for_encoding(tmp_path):
    """A 36 Mpx RGBA PNG (137 MB decoded) for encoding: reduced before it is converted; converted whole,
    it peaked over 700 MB."""
    pixels = np.zeros((6000, 6000, 4), np.uint8)
    pixels[..., 1] = pixels[..., 3] = 255
    Image.fromarray(pixels, "RGBA").save(tmp_path / "big.png", compress_level=1)
    del pixels
    can_measure = sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)
    if can_measure:
        Path("/proc/self/clear_refs").write_text("5")
    start = _memory_kb("VmRSS")
    img = load_image(tmp_path / "big.png", max_side=448)
    assert 448 <= min(img.size) < 2 * 448 and img.getpixel((100, 100)) == (0, 255, 0)
    if can_measure:
        assert (_memory_kb("VmHWM") - start) / 1024 < 350, "decoding took more than 350 MB"
