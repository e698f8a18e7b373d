"""A multilingual text encoder for ViT-B/32 collections: queries in 50+ languages, images unchanged.

sentence-transformers' ``clip-ViT-B-32-multilingual-v1`` (a multilingual DistilBERT, mean pooling, a
768 -> 512 dense layer) was trained by multilingual knowledge distillation to put a sentence in any of
its languages where OpenAI CLIP ViT-B/32's text encoder puts the English sentence. It encodes text only:
the images of a collection indexed with ViT-B/32 are searched as they are, no re-indexing.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
import torch

from .config import CLIP_MODEL, MULTILINGUAL_MODEL, TextimgError, check_text_model, first_line, host_reachable
from .encoders import check_query, normalize, pick_device

__all__ = ["load_text_encoder"]

INSTALL_HINT = "pip install 'textimg-helpers[multilingual]' (or pip install sentence-transformers)"


@dataclass
class TextEncoder:
    """A loaded text-only model whose vectors live in ``image_model``'s space; hold it and reuse it."""

    model: Any  # a sentence_transformers.SentenceTransformer
    name: str
    image_model: str = CLIP_MODEL  # the collections it can search are those built with this model

    @property
    def dim(self) -> int:
        """Embedding dimension (512, ViT-B/32's)."""
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(dim())  # renamed in sentence-transformers 6

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Queries in any of the model's languages -> unit vectors (n, dim); empty ones are refused."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for text in texts:
            check_query(text, warn=False)
            warn_if_truncated(self.model, text)
        with torch.inference_mode():
            embs = self.model.encode(texts, convert_to_tensor=True, show_progress_bar=False)
        return normalize(embs)


def warn_if_truncated(model, text: str) -> None:
    """Warn when the model will read only the start of a query (128 tokens for the multilingual one)."""
    n_tokens = len(model.tokenizer(text)["input_ids"])
    if n_tokens > model.max_seq_length:
        warnings.warn(f"query has {n_tokens} tokens; the text model reads only the first "
                      f"{model.max_seq_length}, the rest is ignored", stacklevel=4)


def load_text_encoder(text_model: str, device: str = "auto", cache_folder: str | None = None) -> TextEncoder | None:
    """``multilingual`` (downloaded once, then cached) or a folder holding a sentence-transformers model;
    ``clip`` gives None: the image model's own text encoder is used."""
    check_text_model(text_model)
    if text_model == "clip":
        return None
    SentenceTransformer = import_sentence_transformers()
    local = text_model != "multilingual"
    source = str(Path(text_model).expanduser()) if local else MULTILINGUAL_MODEL
    cache_folder = cache_folder or os.environ.get("SENTENCE_TRANSFORMERS_HOME")
    cached = local or is_cached(source, cache_folder)
    if not cached:
        check_downloadable(source, cache_folder)
    try:
        with quiet_loading(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = SentenceTransformer(source, device=pick_device(device), cache_folder=cache_folder,
                                        local_files_only=cached and not local)  # cached: no network call
    except Exception as exc:  # OSError, ValueError, RuntimeError, safetensors' errors...
        where = source if local else cache_path(source, cache_folder)
        why = first_line(exc, 200) or type(exc).__name__
        raise TextimgError(f"could not load the text model from {where} ({why}); the files look corrupt or "
                           f"incomplete: delete {where} and run again") from exc
    return TextEncoder(model.eval(), Path(source).name)


def import_sentence_transformers():
    """The ``SentenceTransformer`` class, or one line saying how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise TextimgError(f"--text-model multilingual needs the sentence-transformers package ({exc}): "
                           f"{INSTALL_HINT}") from None
    return SentenceTransformer


@contextmanager
def quiet_loading():
    """No progress bars or info lines from transformers and the hub while a model loads; their
    settings are as they were afterwards."""
    try:
        import huggingface_hub.utils as hub_utils
        from transformers.utils import logging as transformers_logging
    except ImportError:
        yield
        return
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    hub_bars_off = hub_utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
        (hub_utils.disable_progress_bars if hub_bars_off else hub_utils.enable_progress_bars)()


def cache_path(repo_id: str, cache_folder: str | None = None) -> Path:
    """Where the Hugging Face hub keeps a model's files (``~/.cache/huggingface/hub/models--...``)."""
    from huggingface_hub import constants

    return Path(cache_folder or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def is_cached(repo_id: str, cache_folder: str | None = None) -> bool:
    """True when a complete download of the model is in the cache (its weights and module list)."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(repo_id, name, cache_dir=cache_folder) for name in ("modules.json", "config.json")]
    return all(isinstance(path, str) for path in found)


def check_downloadable(repo_id: str, cache_folder: str | None = None) -> None:
    """Stop with one line when the model is not cached and the hub cannot be reached (or is switched off)."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if offline or not host_reachable(host):
        reason = "HF_HUB_OFFLINE is set" if offline else f"{host} is unreachable: no internet?"
        raise TextimgError(f"cannot download the multilingual text model {repo_id} ({reason}) and it is not "
                           f"cached at {cache_path(repo_id, cache_folder)}; run once with internet to cache it, "
                           "or search offline with TEXTIMG_PROFILE=shapes (its model reads en, de, pt, ru, ar) "
                           "and --text-model clip")
