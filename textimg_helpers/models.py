"""Which model to pick: the supported CLIP and SigLIP models, their published quality and measured speed.

OpenAI's names (``ViT-B/32``) load through ``clip`` as in the tutorial; ``ARCH/PRETRAINED`` names as
open_clip writes them (``ViT-B-32/laion2b_s34b_b79k``) load through ``open_clip`` (the ``models``
extra). Any open_clip pair works; ``MODELS`` lists the ones ``textimg models`` describes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import CLIP_MODELS, TextimgError

__all__ = ["MODELS", "SPEED_FILE", "measure_speed", "models_table"]

SOURCE = ("published figures: open_clip's results tables, docs/openclip_results.csv (zero-shot ImageNet-1k "
          "top-1) and docs/openclip_retrieval_results.csv (text-to-image recall@5 on MS-COCO 5k and Flickr30k), "
          "github.com/mlfoundations/open_clip; OpenAI's models are its rows 'openai'")
SPEED_FILE = Path(__file__).resolve().parent / "assets" / "model_speed.json"  # written by benchmarks/bench_models.py


@dataclass(frozen=True)
class ModelInfo:
    """A model and its published figures (fractions), as open_clip's tables give them."""

    name: str  # what --model takes
    dim: int
    params_m: float  # millions of parameters (image and text towers)
    imagenet: float  # zero-shot ImageNet-1k top-1
    coco_r5: float  # MS-COCO text-to-image recall@5
    flickr_r5: float  # Flickr30k text-to-image recall@5
    note: str = ""

    @property
    def backend(self) -> str:
        return "clip" if is_openai_name(self.name) else "open_clip"

    @property
    def download_mb(self) -> int:
        """About the size of the weights: 2 bytes a parameter for OpenAI's fp16 files, 4 for open_clip's fp32."""
        return round(self.params_m * (2 if self.backend == "clip" else 4) * 1e6 / 2**20)


MODELS = (
    ModelInfo("ViT-B/32", 512, 151.28, 0.6332, 0.5594, 0.8356, "the tutorial's model"),
    ModelInfo("ViT-B/16", 512, 149.62, 0.6834, 0.5842, 0.8572),
    ModelInfo("ViT-L/14", 768, 427.62, 0.7554, 0.6106, 0.8724),
    ModelInfo("ViT-B-32/laion2b_s34b_b79k", 512, 151.28, 0.6656, 0.6543, 0.8838, "ViT-B/32's cost, better retrieval"),
    ModelInfo("ViT-B-32-256/datacomp_s34b_b86k", 512, 151.29, 0.7281, 0.6543, 0.8722),
    ModelInfo("ViT-B-16-SigLIP/webli", 768, 203.16, 0.7604, 0.7244, 0.9230, "SigLIP"),
)


def is_openai_name(model: str) -> bool:
    """True for the names ``clip.load`` knows (``ViT-B/32``, ``RN50``...)."""
    return model in CLIP_MODELS


def info(model: str) -> ModelInfo | None:
    return next((m for m in MODELS if m.name == model), None)


def measured_speed() -> dict:
    """``{"machine", "date", "models": {name: {"images_per_s", "query_ms"}}}`` from the last
    ``benchmarks/bench_models.py --write``, or an empty dict."""
    try:
        return json.loads(SPEED_FILE.read_text())
    except (OSError, ValueError):
        return {}


def measure_speed(model: str, images: int = 32, queries: int = 20, device: str = "cpu") -> dict:
    """Images/s (batches of 16 random pictures) and the median ms to encode one query, for ``model``
    with RANDOM weights (the real architecture: the cost is real, the vectors mean nothing). A model
    whose tokenizer cannot be had here (SigLIP's, offline) is timed on images only."""
    import numpy as np

    from .config import is_open_clip_name
    from .encoders import load_encoder, load_open_clip, pick_device

    try:
        encoder = load_encoder(model, device=device, random_weights=True)
    except TextimgError:
        if not is_open_clip_name(model):
            raise
        encoder = load_open_clip(model, pick_device(device), random_weights=True, tokenizer=False)  # offline SigLIP
    encoder.bf16 = False  # fp32: the same arithmetic for every model
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (16, encoder.resolution, encoder.resolution, 3), dtype=np.uint8)
    encoder.encode_images(batch[:2])  # warm-up
    start = time.perf_counter()
    for _ in range(max(1, images // len(batch))):
        encoder.encode_images(batch)
    images_per_s = max(1, images // len(batch)) * len(batch) / (time.perf_counter() - start)
    figures = {"images_per_s": round(images_per_s, 2), "dim": encoder.dim}
    if encoder.tokenizer is None and encoder.embed_dim is not None:
        return figures  # no tokenizer here: images only
    times = []
    for i in range(queries + 2):
        start = time.perf_counter()
        encoder.encode_texts([f"a photo of a dog number {i}"])
        times.append(time.perf_counter() - start)
    return {**figures, "query_ms": round(1000 * float(np.median(times[2:])), 1)}


def models_table(speed: dict | None = None) -> str:
    """The table ``textimg models`` prints: published quality beside measured speed."""
    speed = measured_speed() if speed is None else speed
    measured = speed.get("models", {})
    header = (f"{'model':<34} {'via':<9} {'dim':>4} {'params':>7} {'≈download':>10} {'ImageNet':>8} "
              f"{'COCO R@5':>8} {'Flickr R@5':>10} {'images/s':>9} {'query ms':>8}  note")
    lines = [header]
    for m in MODELS:
        s = measured.get(m.name, {})
        rate = f"{s['images_per_s']:.1f}" if "images_per_s" in s else "-"
        query = f"{s['query_ms']:.0f}" if "query_ms" in s else "-"
        lines.append(f"{m.name:<34} {m.backend:<9} {m.dim:>4} {m.params_m:>6.0f}M {m.download_mb:>7} MB "
                     f"{m.imagenet:>8.1%} {m.coco_r5:>8.1%} {m.flickr_r5:>10.1%} {rate:>9} {query:>8}  {m.note}")
    lines.append(SOURCE + ".")
    if measured:
        lines.append(f"speed: {speed.get('what', 'measured with random weights')}, on {speed.get('machine', '?')}, "
                     f"{speed.get('date', '?')}; textimg models --measure times them on this machine.")
    else:
        lines.append("speed: not measured yet; textimg models --measure times them on this machine.")
    lines.append("any other open_clip pair works too: --model ARCH/PRETRAINED (open_clip.list_pretrained()).")
    return "\n".join(lines)
