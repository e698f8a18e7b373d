"""CLIP encoders: images and texts -> L2-normalised float32 numpy arrays of shape (n, dim)."""

from __future__ import annotations

import logging
import os
import pickle
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

with warnings.catch_warnings():  # openai/CLIP imports pkg_resources
    warnings.simplefilter("ignore")
    import clip
    from clip.model import CLIP

from .config import (CLIP_CACHE, TextimgError, check_model, error_text, first_line, host_reachable, is_open_clip_name,
                     model_name)
from .data import pixels, read_query_image

__all__ = ["Encoder", "PRECISION_TIMED", "TRIAL_IMAGES", "check_query", "encode_image_file", "encode_queries",
           "load_encoder", "load_open_clip", "normalize", "normalize_pixels", "pick_device", "random_model",
           "set_precision", "use_bf16"]

CONTEXT_LENGTH = 77
RANDOM_SEED = 0
TRIAL_IMAGES = 8  # images encoded each way (fp32, bf16), when a model loads, to choose between them on a CPU
# Each model is timed once per process, on its first load: a second load of it (a notebook cell run again,
# two encoders compared) takes the same precision, so it gives the same vectors. {(name, device): trials}
PRECISION_TIMED: dict[tuple[str, str], dict] = {}
# openai/CLIP's colour normalisation (clip.clip._transform), in 0-255 pixel units.
PIXEL_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
PIXEL_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)
# Constructor arguments of openai/CLIP's ViT models, for --random-weights without a download.
ARCHITECTURES = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, context_length=77, vocab_size=49408,
                     transformer_width=768, transformer_heads=12, transformer_layers=12),
}


def pick_device(device: str = "auto") -> str:
    """``cuda`` if available, else ``mps``, else ``cpu``; an explicit choice wins if this machine has it."""
    if device and device != "auto":
        kind = device.split(":")[0]
        mps = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}
        if kind not in available:
            raise TextimgError(f"unknown device {device!r}: use auto, cpu, cuda (or cuda:N) or mps")
        if not available[kind]:
            raise TextimgError(f"device {device!r} is not available on this machine: use --device cpu "
                               "(or auto, or TEXTIMG_DEVICE=cpu)")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class Encoder:
    """A loaded CLIP (or open_clip) model with its preprocessing; hold it and reuse it (it stays warm)."""

    model: CLIP
    preprocess: Callable
    device: str
    name: str
    # Image encoder under bfloat16 autocast: chosen once, when the model loads (``set_precision``), so
    # the same images give the same vectors whatever was encoded before.
    bf16: bool = False
    trials: dict = field(default_factory=dict, repr=False)  # seconds per image, {bf16: ...}
    # An open_clip model's own tokenizer, size and colour normalisation (0-255 units); None: CLIP's.
    tokenizer: Callable | None = field(default=None, repr=False)
    embed_dim: int | None = None
    image_size: int | None = None
    mean: tuple = PIXEL_MEAN
    std: tuple = PIXEL_STD

    @property
    def dim(self) -> int:
        """Embedding dimension (512 for ViT-B/32)."""
        return self.embed_dim or int(self.model.text_projection.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.device == "cuda" else torch.float32

    @property
    def resolution(self) -> int:
        """Side of the square input image (224 for ViT-B/32)."""
        return self.image_size or int(self.model.visual.input_resolution)

    def encode_images(self, images: Sequence | np.ndarray | torch.Tensor) -> np.ndarray:
        """Images -> unit vectors (n, dim). ``images``: PIL images, a uint8 batch of ``pixels``
        (n, H, W, 3), or a float batch already through ``preprocess`` (n, 3, H, W)."""
        if not isinstance(images, (np.ndarray, torch.Tensor)):
            if not len(images):
                return np.zeros((0, self.dim), dtype=np.float32)
            images = np.stack([pixels(img, self.resolution) for img in images])
        batch = torch.as_tensor(images)
        if batch.dtype == torch.uint8:  # normalised here, in one vectorised step for the batch
            batch = normalize_pixels(batch, self.mean, self.std)
        return normalize(self._forward(batch.to(self.device, self.dtype), self.bf16))

    def choose_precision(self, images: int = TRIAL_IMAGES) -> bool:
        """Time ``images`` fixed random images in fp32 and in bf16 (each after one image to warm it up)
        and keep bf16 only if it was clearly faster (a CPU may compute bf16 natively or merely emulate
        it); ``set_precision`` calls it once, as the model loads. Returns the choice."""
        rng = np.random.default_rng(RANDOM_SEED)
        pixels_ = rng.integers(0, 256, (images, self.resolution, self.resolution, 3), dtype=np.uint8)
        batch = normalize_pixels(torch.from_numpy(pixels_), self.mean, self.std).to(self.device, self.dtype)
        for bf16 in (False, True):
            self._forward(batch[:1], bf16)
            start = time.perf_counter()
            self._forward(batch, bf16)
            self.trials[bf16] = (time.perf_counter() - start) / images
        self.bf16 = bf16_faster(self.trials)
        return self.bf16

    def _forward(self, batch: torch.Tensor, bf16: bool) -> torch.Tensor:
        """The image encoder on a model-ready batch, without autograd, in bf16 autocast or not."""
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return self.model.encode_image(batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Captions -> unit vectors (n, dim); empty texts are refused, long ones truncated."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for text in texts:
            check_query(text)
        if self.tokenizer is not None:  # open_clip's own (it truncates to the model's context length)
            tokens = self.tokenizer(texts)
        elif self.embed_dim is not None:
            raise TextimgError(f"{self.name} was loaded without its tokenizer: it encodes images only")
        else:
            tokens = clip.tokenize(texts, context_length=CONTEXT_LENGTH, truncate=True)
            # CLIP's text transformer is causal: padding after the end token never changes its output,
            # so encode only up to the longest caption (same vectors, less work the shorter the captions).
            tokens = tokens[:, :int(tokens.argmax(dim=-1).max()) + 1]
        with torch.inference_mode():
            embs = self.model.encode_text(tokens.to(self.device))
        return normalize(embs)


def encode_queries(encoder: Encoder, queries: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
    """Text vectors for queries; with ``templates`` ("a photo of a {}"), each query is put in every
    template, the vectors averaged and normalised again (prompt ensembling)."""
    if not templates:
        return encoder.encode_texts(queries)
    for query in queries:
        check_query(query)
    embs = np.stack([encoder.encode_texts([t.format(q) for t in templates]).mean(axis=0) for q in queries])
    return embs / np.linalg.norm(embs, axis=1, keepdims=True)


def encode_image_file(encoder: Encoder, image_path: str | os.PathLike) -> np.ndarray:
    """The unit vector of the image at ``image_path``, shape (1, dim); one readable error if it cannot be read."""
    return encoder.encode_images([read_query_image(image_path, max_side=2 * encoder.resolution)])


def normalize_pixels(batch: torch.Tensor, mean=PIXEL_MEAN, std=PIXEL_STD) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) with a colour normalisation (CLIP's by default)."""
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return batch.permute(0, 3, 1, 2).float().sub_(mean).div_(std)


def normalize(embs: torch.Tensor) -> np.ndarray:
    """Float32 numpy rows scaled to unit length (so a dot product is a cosine)."""
    embs = embs.float()
    return (embs / embs.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


def check_query(text: str, warn: bool = True) -> None:
    """Refuse an empty query; warn when CLIP will truncate it to 77 tokens."""
    if not isinstance(text, str) or not text.strip():
        raise TextimgError("the query is empty: type a few words such as 'a red circle'")
    if not warn:
        return
    n_tokens = len(clip.clip._tokenizer.encode(text)) + 2
    if n_tokens > CONTEXT_LENGTH:
        warnings.warn(f"query has {n_tokens} tokens; CLIP reads only the first {CONTEXT_LENGTH}, "
                      "the rest is ignored", stacklevel=3)


def load_encoder(model: str, device: str = "auto", random_weights: bool = False,
                 download_root: str | os.PathLike | None = None) -> Encoder:
    """Load a CLIP model by name (``ViT-B/32``), open_clip pair (``ViT-B-32/laion2b_s34b_b79k``) or
    checkpoint path, ready for inference."""
    device = pick_device(device)
    if is_open_clip_name(model):
        return load_open_clip(model, device, random_weights)
    if random_weights:
        net = random_model(model)
        preprocess = clip.clip._transform(net.visual.input_resolution)
    else:
        net, preprocess = _load_pretrained(model, device, download_root)
    net = net.to(device).eval()
    net = net.half() if device == "cuda" else net.float()
    return set_precision(Encoder(net, preprocess, device, model_name(model, random_weights)))


def load_open_clip(model: str, device: str, random_weights: bool = False, tokenizer: bool = True) -> Encoder:
    """An open_clip ``ARCH/PRETRAINED`` model with its own preprocessing and tokenizer (weights from the
    Hugging Face cache, downloaded on first use); with ``random_weights``, the architecture only; without
    ``tokenizer``, an encoder of images only (SigLIP's tokenizer is a download of its own)."""
    open_clip = import_open_clip()
    check_known(model)
    arch, tag = model.split("/")
    offline = not host_reachable("huggingface.co")
    try:
        with hub_offline(offline), quiet_loading():
            torch.manual_seed(RANDOM_SEED)
            net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None if random_weights else tag)
            tokenizer = open_clip.get_tokenizer(arch) if tokenizer else None
    except Exception as exc:
        what = "the tokenizer" if random_weights else "the weights or the tokenizer"
        if offline:
            from huggingface_hub.constants import HF_HUB_CACHE

            raise TextimgError(f"cannot download {what} of open_clip {model} (no internet?) and they are not in "
                               f"the Hugging Face cache {HF_HUB_CACHE}: run once with internet, or use the offline "
                               "profile TEXTIMG_PROFILE=shapes") from None
        raise TextimgError(f"could not load open_clip {model}: {error_text(exc)[:300]}") from exc
    cfg = getattr(net.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(net.visual, "image_size", 224))
    net = net.to(device).eval()
    net = net.half() if device == "cuda" else net.float()
    return set_precision(Encoder(
        net, preprocess, device, model_name(model, random_weights), tokenizer=tokenizer,
        embed_dim=int(open_clip.get_model_config(arch)["embed_dim"]),
        image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
        mean=tuple(255 * v for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(255 * v for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))))


def check_known(model: str) -> None:
    """Refuse an ``ARCH/PRETRAINED`` pair open_clip does not have, with the ones it has for ``ARCH``."""
    open_clip = import_open_clip()
    arch, tag = model.split("/")
    if arch not in open_clip.list_models():
        raise TextimgError(f"open_clip has no architecture {arch!r} (model {model!r}); see textimg models, "
                           "or open_clip.list_models()")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise TextimgError(f"open_clip has no weights {tag!r} for {arch}: it has {', '.join(tags) or 'none'}")


def import_open_clip():
    """``open_clip``, or one line naming the extra that installs it."""
    try:
        import open_clip
    except ImportError:
        raise TextimgError('ARCH/PRETRAINED models need open_clip: pip install "textimg-helpers[models]"') from None
    return open_clip


@contextmanager
def hub_offline(offline: bool):
    """Hugging Face Hub in offline mode inside the block when ``offline`` (no minute of retries
    before the cache is looked at)."""
    if not offline:
        yield
        return
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as constants

        saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@contextmanager
def quiet_loading():
    """No warnings and log lines while open_clip builds a model ("No pretrained weights loaded", "Failed
    to download": the error raised after it says what to do)."""
    logging.disable(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def set_precision(encoder: Encoder) -> Encoder:
    """Choose the image encoder's precision once, as it loads: ``use_bf16``, timed (``choose_precision``)
    when that leaves it open, on the model's first load in this process (``PRECISION_TIMED``); from then
    on the same images always give the same vectors, from this encoder and from any other of the model."""
    choice = use_bf16(encoder.device)
    key = (encoder.name, encoder.device)
    if choice is None and key in PRECISION_TIMED:  # timed on an earlier load of this model
        encoder.trials = dict(PRECISION_TIMED[key])
        encoder.bf16 = bf16_faster(encoder.trials)
    elif choice is None:
        encoder.choose_precision()
        PRECISION_TIMED[key] = dict(encoder.trials)
    else:
        encoder.bf16 = choice
    return encoder


def bf16_faster(trials: dict) -> bool:
    """bf16 only if it was clearly faster in the timing ``{bf16: seconds per image}``: by 10% or more."""
    return trials[True] < 0.9 * trials[False]


def use_bf16(device: str) -> bool | None:
    """bfloat16 for images on a CPU with bf16 instructions (cosine to fp32 above 0.99): ``None``, to
    be decided by timing when the model loads, since such a CPU may compute bf16 natively or merely
    emulate it. ``TEXTIMG_BF16=0`` turns it off, ``TEXTIMG_BF16=1`` on."""
    choice = os.environ.get("TEXTIMG_BF16", "auto")
    if device != "cpu" or choice == "0":
        return False
    if choice == "1":
        return True
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return None if any(getattr(cpu, name, lambda: False)() for name in checks) else False


def _load_pretrained(model: str, device: str, download_root) -> tuple[CLIP, Callable]:
    """``clip.load`` with errors a user can act on (offline, corrupt file, unknown name)."""
    root = Path(download_root or CLIP_CACHE)
    check_model(model)
    if model in clip.available_models():
        target = root / Path(clip.clip._MODELS[model]).name
        if not target.is_file() and not host_reachable("openaipublic.azureedge.net"):
            raise TextimgError(f"cannot download CLIP {model} weights (no internet?) and they are "
                               f"not cached at {target}; use the offline profile: TEXTIMG_PROFILE=shapes")
    else:
        target = Path(model)
    try:
        return _clip_load(model, device=device, download_root=str(root))
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        why = ("not a PyTorch file" if isinstance(exc, pickle.UnpicklingError)
               else first_line(exc, 200, sentence=True) or type(exc).__name__)
        raise TextimgError(f"could not load CLIP checkpoint {target} ({why}); the file looks corrupt or "
                           f"incomplete: delete {target} and run again") from exc


def _clip_load(model: str, **options) -> tuple[CLIP, Callable]:
    """``clip.load(jit=False)`` without the FutureWarning of its JIT probe."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return clip.load(model, jit=False, **options)


def random_model(model: str, seed: int = RANDOM_SEED) -> CLIP:
    """The named architecture (or a checkpoint's) with random weights from a fixed seed."""
    if model in ARCHITECTURES:
        torch.manual_seed(seed)
        return CLIP(**ARCHITECTURES[model]).eval()
    if not Path(model).is_file():
        raise TextimgError(f"--random-weights needs one of {', '.join(ARCHITECTURES)} or a checkpoint path, "
                           f"not {model!r}")
    net, _ = _clip_load(str(model), device="cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if module is not net and hasattr(module, "_reset_parameters"):
                module._reset_parameters()
            elif module is not net and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for name in ("class_embedding", "positional_embedding", "proj"):  # ViT parameters
            if isinstance(getattr(net.visual, name, None), torch.nn.Parameter):
                param = getattr(net.visual, name)
                param.normal_(std=param.shape[-1] ** -0.5)
        net.initialize_parameters()
    return net.float().eval()
