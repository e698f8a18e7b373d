"""Encoders return L2-normalised float32 arrays, one row per image or text."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from textimg_helpers.config import SHAPES_CHECKPOINT, TextimgError
from textimg_helpers.encoders import load_encoder, pick_device


@pytest.fixture(scope="module")
def vit_b_32():
    """The real ViT-B/32 architecture with random weights (no download)."""
    return load_encoder("ViT-B/32", device="cpu", random_weights=True)


def _images(n):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)) for _ in range(n)]


def test_vit_b_32_architecture_gives_512d_unit_vectors(vit_b_32):
    image_embs = vit_b_32.encode_images(_images(3))
    text_embs = vit_b_32.encode_texts(["a white dog", "a red circle"])
    assert vit_b_32.name == "ViT-B/32+random" and vit_b_32.dim == 512
    for embs, n in ((image_embs, 3), (text_embs, 2)):
        assert embs.shape == (n, 512) and embs.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-5)


def test_random_weights_are_the_same_in_every_process(vit_b_32):
    again = load_encoder("ViT-B/32", device="cpu", random_weights=True)
    np.testing.assert_allclose(again.encode_texts(["a dog"]), vit_b_32.encode_texts(["a dog"]), atol=1e-6)


def test_pixels_are_clips_preprocessing_up_to_one_grey_level():
    """The fast reader's resize + crop gives the pixels of openai/CLIP's own ``preprocess``."""
    import torch
    from clip.clip import _transform

    from textimg_helpers.data import pixels
    from textimg_helpers.encoders import normalize_pixels

    rng = np.random.default_rng(1)
    for h, w in ((120, 90), (90, 120), (375, 500), (2000, 301), (224, 224), (1, 1), (17, 400)):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        ours = normalize_pixels(torch.from_numpy(pixels(img, 224))[None])[0]
        theirs = _transform(224)(img)
        assert ours.shape == theirs.shape == (3, 224, 224)
        # one grey level is 1 / 255 / std ~ 0.015 in normalised units
        assert (ours - theirs).abs().max() < 0.016, (h, w)


def test_images_pixels_and_preprocessed_tensors_give_the_same_vectors(vit_b_32):
    import torch

    from textimg_helpers.data import pixels

    images = _images(2)
    from_images = vit_b_32.encode_images(images)
    from_pixels = vit_b_32.encode_images(np.stack([pixels(img) for img in images]))
    np.testing.assert_allclose(from_images, from_pixels, atol=1e-6)
    # CLIP's preprocess differs by at most a grey level in a few pixels; bf16 can amplify that a little
    from_clip = vit_b_32.encode_images(torch.stack([vit_b_32.preprocess(img) for img in images]))
    assert (from_clip * from_images).sum(axis=1).min() > 0.999


def test_shapes_checkpoint_loads_through_clip_load():
    encoder = load_encoder(str(SHAPES_CHECKPOINT), device="cpu")
    assert encoder.name == "shapes-clip"
    embs = encoder.encode_texts(["a red circle"])
    assert embs.shape == (1, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(embs), 1.0, atol=1e-5)


def test_empty_query_is_refused_and_long_query_truncated_with_a_warning(vit_b_32):
    with pytest.raises(TextimgError, match="query is empty"):
        vit_b_32.encode_texts(["   "])
    with pytest.warns(UserWarning, match="CLIP reads only the first 77"):
        embs = vit_b_32.encode_texts(["a very long caption " * 40])
    assert embs.shape == (1, 512)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(TextimgError, match="neither a CLIP name"):
        load_encoder("ViT-Q99", device="cpu")
    if importlib.util.find_spec("open_clip"):  # ARCH/PRETRAINED: open_clip's names
        with pytest.raises(TextimgError, match="open_clip has no architecture 'ViT-Q'"):
            load_encoder("ViT-Q/99", device="cpu")


@pytest.mark.parametrize("cuda, mps, chosen", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"),
                                              (False, False, "cpu")])
def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, chosen):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto") == chosen
    assert pick_device() == chosen


def test_an_explicit_device_wins_when_this_machine_has_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert [pick_device(device) for device in ("cpu", "cuda", "cuda:1", "mps")] == ["cpu", "cuda", "cuda:1", "mps"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("cpu") == "cpu"
    for device in ("cuda", "cuda:0", "mps"):
        with pytest.raises(TextimgError, match=f"device '{device}' is not available on this machine: use --device cpu"):
            pick_device(device)
    with pytest.raises(TextimgError, match="unknown device 'gpu': use auto, cpu, cuda"):
        pick_device("gpu")


@pytest.mark.parametrize("device, says", [("gpu", "unknown device 'gpu'"), ("cuda", "not available")])
def test_a_device_this_machine_lacks_is_named_and_no_file_is_blamed(cli, tmp_path, device, says):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TextimgError, match=says):
        load_encoder(str(SHAPES_CHECKPOINT), device=device)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "images" / "red.png")
    for extra in ([], ["--random-weights"]):
        run = cli("index", tmp_path / "images", "--uri", tmp_path / "m.db", "--device", device, "-q", *extra)
        assert run.code == 1 and says in run.last_err and "delete" not in run.err, run.err
    assert SHAPES_CHECKPOINT.is_file()


def test_short_queries_skip_the_padding_but_give_clips_own_vectors(vit_b_32):
    import clip
    import torch

    texts = ["a dog", "a photo of a small white dog on a green lawn"]
    with torch.inference_mode():
        full = vit_b_32.model.encode_text(clip.tokenize(texts))  # all 77 positions
    full = (full / full.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(vit_b_32.encode_texts(texts), full, atol=1e-5)


def test_bf16_image_vectors_match_fp32(vit_b_32):
    images = _images(4)
    vit_b_32.bf16 = False
    fp32 = vit_b_32.encode_images(images)
    vit_b_32.bf16 = True
    try:
        bf16 = vit_b_32.encode_images(images)
    finally:
        vit_b_32.bf16 = False
    assert bf16.dtype == np.float32
    assert np.min(np.sum(fp32 * bf16, axis=1)) > 0.99  # cosine, both unit vectors


def slowed_down(monkeypatch, slow: str, seen: list) -> None:
    """CLIP's image encoder made 1 s slower in one precision (as bf16 is on CPUs that only emulate it),
    each call's (batch size, bf16) noted in ``seen``; the CPU left undecided, as one with bf16 instructions."""
    import time

    import torch
    from clip.model import CLIP

    from textimg_helpers import encoders

    forward = CLIP.encode_image

    def timed_forward(model, batch):
        bf16 = torch.is_autocast_enabled("cpu")
        seen.append((len(batch), bf16))
        if bf16 == (slow == "bf16"):
            time.sleep(1.0)  # 1 s: a busy 2-core machine hid 0.05 s
        return forward(model, batch)

    monkeypatch.setattr(CLIP, "encode_image", timed_forward)
    monkeypatch.setattr(encoders, "use_bf16", lambda device: None)
    monkeypatch.setattr(encoders, "PRECISION_TIMED", {})  # no model timed yet in this process


@pytest.mark.parametrize("slow", ["bf16", "fp32"])
def test_undecided_precision_is_timed_once_when_the_model_loads(monkeypatch, slow):
    """On a CPU with bf16 instructions, loading times TRIAL_IMAGES images in fp32 and in bf16 (each after
    one to warm up) and keeps the faster; encoding never changes it."""
    from textimg_helpers.encoders import TRIAL_IMAGES

    seen = []
    slowed_down(monkeypatch, slow, seen)
    encoder = load_encoder(str(SHAPES_CHECKPOINT), device="cpu")
    assert seen == [(1, False), (TRIAL_IMAGES, False), (1, True), (TRIAL_IMAGES, True)]
    assert encoder.bf16 is (slow == "fp32") and set(encoder.trials) == {False, True}
    encoder.encode_images(_images(20))
    encoder.encode_images(_images(3))
    assert seen[4:] == [(20, slow == "fp32"), (3, slow == "fp32")] and encoder.bf16 is (slow == "fp32")
    again = load_encoder(str(SHAPES_CHECKPOINT), device="cpu")  # a second load of the model: not timed again
    assert seen[6:] == [] and again.bf16 is encoder.bf16 and again.trials == encoder.trials


@pytest.mark.parametrize("setting", ["0", "1", "auto"])
def test_the_same_images_give_the_same_vectors_whatever_ran_before(monkeypatch, setting):
    """Two encoders loaded the same way give identical vectors for the same batch, although one of them
    encoded other batches first (of 20 images: enough to have started a timing before, on the first call)."""
    monkeypatch.setenv("TEXTIMG_BF16", setting)
    if setting == "auto":
        slowed_down(monkeypatch, "bf16", [])  # the timing's outcome fixed (the second load takes the first's)
    fresh, used = (load_encoder(str(SHAPES_CHECKPOINT), device="cpu") for _ in range(2))
    assert fresh.bf16 is used.bf16 is (setting == "1")
    images = _images(16)
    used.encode_images(_images(20)[::-1])
    used.encode_images(images[:5])
    np.testing.assert_array_equal(used.encode_images(images), fresh.encode_images(images))
    np.testing.assert_array_equal(used.encode_images(images), fresh.encode_images(images))
