"""Phone photos: a HEIC with an embedded thumbnail is read from the thumbnail when it covers the model's
input, and its vector stays the photo's: close to the full decode's, rotated the same way, and nearest to
the same photo saved as JPEG. Every picture is generated here (pillow-heif writes the HEIC files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from textimg_helpers.data import HEIF_SUPPORT, load_image, pixels
from textimg_helpers.encoders import load_encoder
from textimg_helpers.ingest import FileInfo, read_batches

pytestmark = pytest.mark.skipif(not HEIF_SUPPORT, reason="pillow-heif is not installed")

FAST_PATH_COSINE = 0.98  # a fast path's vector against the full decode's (lowest measured here: 0.991)
SIZE = (1280, 960)  # a phone photo, scaled down so that the tests encode it in a fraction of a second
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 70, 210), (230, 200, 40), (150, 60, 170), (30, 170, 180)]


def photo(i: int) -> Image.Image:
    """A picture that differs from the others in colour, shape and place: a gradient sky, a shape, stripes."""
    rng = np.random.default_rng(i)
    y = np.linspace(0, 1, SIZE[1])[:, None, None]
    sky = (1 - y) * rng.integers(60, 255, 3) + y * rng.integers(0, 200, 3)
    img = Image.fromarray(np.broadcast_to(sky, (SIZE[1], SIZE[0], 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    x0, y0 = int(rng.integers(50, 700)), int(rng.integers(50, 400))
    box = (x0, y0, x0 + int(rng.integers(250, 500)), y0 + int(rng.integers(250, 500)))
    (draw.ellipse if i % 2 else draw.rectangle)(box, fill=COLOURS[i % len(COLOURS)])
    for k in range(i + 2):
        draw.line((0, 100 * k, SIZE[0], 100 * k + 300), fill=(255, 255, 255), width=12)
    return img


def save_heic(img: Image.Image, path: Path, thumbnails=(320,), **kwargs) -> Path:
    """As an iPhone writes it: 512-pixel tiles and a 320-pixel thumbnail (x265's fastest preset)."""
    img.save(path, format="HEIF", quality=85, tile_size=512, thumbnails=list(thumbnails),
             enc_params={"preset": "ultrafast"}, **kwargs)
    return path


@pytest.fixture(scope="module")
def vit_b_32():
    """The real ViT-B/32 architecture with random weights (no download)."""
    return load_encoder("ViT-B/32", device="cpu", random_weights=True)


@pytest.fixture(scope="module", params=["shapes", "vit_b_32"])
def encoder(request):
    return request.getfixturevalue("shapes_encoder" if request.param == "shapes" else "vit_b_32")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[tuple[Path, Path]]:
    """Six photos, each as a HEIC with a thumbnail and as a JPEG: ``(heic, jpeg)``."""
    folder = tmp_path_factory.mktemp("phone")
    pairs = []
    for i in range(len(COLOURS)):
        img = photo(i)
        img.save(folder / f"{i}.jpg", quality=90)
        pairs.append((save_heic(img, folder / f"{i}.heic"), folder / f"{i}.jpg"))
    return pairs


def fast_and_full(path: Path, size: int) -> tuple[Image.Image, Image.Image]:
    """The photo as the reader reads it for a model of input ``size``, and fully decoded."""
    return load_image(path, 2 * size, min_side=size), load_image(path)


def test_a_heic_is_read_from_its_thumbnail_only_when_that_covers_the_model_input(photos):
    heic = photos[0][0]
    fast, full = fast_and_full(heic, 224)
    assert fast.info["read_as"] == "embedded thumbnail" and fast.size == (320, 240)
    assert full.info["read_as"] == "full decode" and full.size == SIZE
    larger_model = load_image(heic, 2 * 256, min_side=256)  # 240 pixels are fewer than the model looks at
    assert larger_model.info["read_as"] == "full decode" and larger_model.size == SIZE


def test_a_heic_without_a_thumbnail_is_decoded_whole(tmp_path):
    heic = save_heic(photo(0), tmp_path / "bare.heic", thumbnails=())
    img = load_image(heic, 448, min_side=224)
    assert img.info["read_as"] == "full decode" and img.size == (SIZE[0] // 2, SIZE[1] // 2)  # then reduced to 448+
    assert load_image(heic).size == SIZE


@pytest.mark.parametrize("kind", ["heic", "jpeg"])
def test_the_fast_paths_vector_is_the_photos_vector(photos, encoder, kind):
    """A HEIC from its thumbnail, a JPEG at 1/4 or 1/8 scale, against the same file decoded whole."""
    size, cosines = encoder.resolution, []
    for heic, jpeg in photos:
        fast, full = fast_and_full(heic if kind == "heic" else jpeg, size)
        assert fast.info["read_as"] == ("embedded thumbnail" if kind == "heic" else f"1/{SIZE[0] // fast.width} scale")
        assert full.info["read_as"] == "full decode" and fast.width < full.width
        vectors = encoder.encode_images(np.stack([pixels(fast, size), pixels(full, size)]))
        cosines.append(float(vectors[0] @ vectors[1]))
    print(f"{encoder.name}, {kind}: cosines of the fast path's vectors to the full decode's: {cosines}")
    assert min(cosines) >= FAST_PATH_COSINE, cosines


def test_the_thumbnail_is_turned_as_the_exif_says(tmp_path):
    """A photo taken with the phone on its side (EXIF orientation 6: turn 90 degrees clockwise to show)."""
    stored = photo(1)
    exif = Image.Exif()
    exif[274] = 6
    heic = save_heic(stored, tmp_path / "side.heic", exif=exif.tobytes())  # bytes: pillow-heif writes irot 270
    fast, full = fast_and_full(heic, 224)
    assert fast.info["read_as"] == "embedded thumbnail" and fast.size == (240, 320) and full.size == SIZE[::-1]
    shown = np.asarray(stored.transpose(Image.Transpose.ROTATE_270).resize((240, 320)), dtype=float)
    unturned = np.asarray(stored.resize((320, 240)).resize((240, 320)), dtype=float)
    assert np.abs(np.asarray(fast, dtype=float) - shown).mean() < 8
    assert np.abs(np.asarray(fast, dtype=float) - unturned).mean() > 20


def test_a_heics_nearest_neighbour_among_the_jpegs_is_itself(photos, encoder):
    """Through the reader ``index_folder`` uses: the HEICs from their thumbnails, the JPEGs as always."""
    size = encoder.resolution

    def read(paths):
        files = [FileInfo(str(p), 0, 0, i, p.stem) for i, p in enumerate(paths)]
        batches = list(read_batches(files, size, batch_size=len(files), num_workers=0, max_side=2 * size,
                                    overlap=False))
        return encoder.encode_images(batches[0][1]), batches[0].read_as

    heic_embs, heic_read = read([heic for heic, _ in photos])
    jpeg_embs, jpeg_read = read([jpeg for _, jpeg in photos])
    assert heic_read == {".heic embedded thumbnail": len(photos)}
    assert len(jpeg_read) == 1 and next(iter(jpeg_read)).startswith(".jpg 1/")  # JPEG's draft: 1/8 or 1/4 here
    assert list(np.argmax(heic_embs @ jpeg_embs.T, axis=1)) == list(range(len(photos)))


def test_index_says_how_it_read_each_kind_of_file(photos, tmp_path, cli):
    folder = tmp_path / "library"
    folder.mkdir()
    for heic, jpeg in photos[:2]:
        for path in (heic, jpeg):
            (folder / path.name).symlink_to(path)
    run = cli("index", folder, "--uri", tmp_path / "m.db", "--debug", "-q")
    assert run.summary["indexed"] == 4
    assert "textimg: read as: .heic embedded thumbnail 2, .jpg 1/8 scale 2" in run.err
    assert run.err.count("read as") == 1  # one line a run, not one a file
    with_bar = cli("index", folder, "--uri", tmp_path / "bar.db")
    assert with_bar.summary["indexed"] == 4 and "read as" not in with_bar.err
    assert ".heic embedded thumbnail 2, .jpg 1/8 scale 2" in with_bar.err.splitlines()[-1]  # the bar's last state


def test_a_result_grids_thumbnail_of_a_heic_comes_from_its_embedded_thumbnail(photos):
    from textimg_helpers.viz import thumbnail

    small = thumbnail(str(photos[0][0]), 160)
    assert small.size == (160, 120) and small.info["read_as"] == "embedded thumbnail"


def test_reader_processes_say_how_they_read_too(photos):
    """On more than 4 cores the reader decodes in processes: the counts come back with each batch."""
    files = [FileInfo(str(heic), 0, 0, i, heic.stem) for i, (heic, _) in enumerate(photos)]
    batches = list(read_batches(files, 224, batch_size=3, num_workers=1, max_side=448))
    assert [b.read_as for b in batches] == [{".heic embedded thumbnail": 3}] * 2


def test_a_phone_jpeg_with_a_second_picture_is_drafted_too(tmp_path):
    """Phones append a gain map or depth map to their JPEGs: Pillow opens those as MPO."""
    img = photo(2)
    img.save(tmp_path / "mpo.jpg", "MPO", save_all=True, append_images=[img.resize((320, 240))])
    read = load_image(tmp_path / "mpo.jpg", 448, min_side=224)
    assert read.size == (320, 240) and read.info["read_as"] == "1/4 scale"
