"""One setup call: settings -> profile, model, collection, images, Milvus client and encoder.

Notebooks 02-05 and every ``textimg`` command start here (fastbook's ``setup_book()``), so the rules
for choosing a profile and connecting to Milvus live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from .config import (CLIP_CACHE, CLIP_MODEL, CLIP_MODELS, Settings, TextimgError, check_model, default_collection,
                     host_reachable, model_for_profile, model_name)

# Every ``textimg`` command imports this module first, so the stages (numpy and Pillow, pymilvus, torch)
# are imported inside the methods that use them: ``textimg --help`` or a bad argument costs none of them.

__all__ = ["Session", "open_session", "resolve_profile"]


class ProfileQueries(NamedTuple):
    """A profile's queries: ``demo``, the one ``textimg demo`` and notebook 00 show (the Milvus tutorial's
    own "a white dog" for clip), and ``known``, whose top results must have the label ``expected``
    (the notebooks and tests assert it; no label of the tutorial's photos is a white dog)."""

    demo: str
    known: str
    expected: str


QUERIES = {"shapes": ProfileQueries("a red circle", "a red circle", "red_circle"),
           "clip": ProfileQueries("a white dog", "a goldfish", "goldfish")}


def resolve_profile(settings: Settings, announce=print) -> str:
    """``clip`` or ``shapes``; ``auto`` picks ``clip`` when its weights and data are cached or reachable,
    or, with a ``textimg download`` folder (``TEXTIMG_CACHE``), when that folder is complete (no network)."""
    if settings.profile != "auto":
        return settings.profile
    if settings.cache is not None:
        return cached_profile(settings, announce)
    from .downloads import DATASET_DIR

    weights = (CLIP_CACHE / "ViT-B-32.pt").is_file() or host_reachable("openaipublic.azureedge.net")
    data = (settings.data_dir / DATASET_DIR / "train").is_dir() or host_reachable("github.com")
    if weights and data:
        return "clip"
    announce("*** TEXTIMG_PROFILE=auto: CLIP ViT-B/32 weights or the tutorial images are neither cached "
             "nor reachable, so using the OFFLINE 'shapes' profile (a small CLIP trained on coloured "
             "shapes). Set TEXTIMG_PROFILE=clip or shapes to choose. ***")
    return "shapes"


def cached_profile(settings: Settings, announce=print) -> str:
    """``auto`` with a ``textimg download`` folder: ``clip`` when it is complete, else ``shapes`` and the
    line that says what is missing; never a network call."""
    from .bundle import bundle_problem

    problem = bundle_problem(settings.cache, model_for_profile("clip", settings.model), text_model=settings.text_model)
    if problem is None:
        return "clip"
    announce(f"*** TEXTIMG_PROFILE=auto: {problem}; using the OFFLINE 'shapes' profile meanwhile ***")
    return "shapes"


def cached_model(settings: Settings, profile: str, model: str, random_weights: bool) -> str:
    """The model as ``clip.load`` takes it: with a ``textimg download`` folder and the ``clip`` profile, a
    CLIP name's weights file there (checked: one line names what is missing); else ``model`` itself."""
    if settings.cache is None or profile != "clip":
        return model
    from .bundle import check_bundle, weights_file

    check_bundle(settings.cache, model, text_model=settings.text_model)
    return str(weights_file(settings.cache, model)) if model in CLIP_MODELS and not random_weights else model


@dataclass
class Session:
    """What a notebook or a command works with: resolved names only; ``connect()``, ``load_encoder()``
    and ``image_folder()`` do the costly work (each once), when called."""

    settings: Settings
    profile: str
    model: str  # a CLIP name or a checkpoint path, as clip.load takes it
    model_name: str  # the name stored with a collection
    collection_name: str
    random_weights: bool = False
    announce: Callable = field(default=print, repr=False)
    _client: object = field(default=None, init=False, repr=False)
    _encoder: object = field(default=None, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, random_weights: bool = False,
                      announce=print) -> "Session":
        """Resolve the profile, the model (checked before anything loads) and the collection name."""
        settings = Settings.from_env() if settings is None else settings
        profile = resolve_profile(settings, announce)
        model = model_for_profile(profile, settings.model)
        if settings.text_model != "clip" and model_name(model) != CLIP_MODEL and settings.model:
            raise TextimgError(f"--text-model {settings.text_model} reads queries into OpenAI {CLIP_MODEL}'s space "
                               f"only, not {model_name(model)}'s: use --model {CLIP_MODEL} (or --profile clip), or "
                               "leave --text-model out")
        check_model(model)
        name = model_name(model, random_weights)
        model = cached_model(settings, profile, model, random_weights)
        return cls(settings, profile, model, name, settings.collection_name or default_collection(name),
                   random_weights, announce)

    def connect(self, read_only: bool = False):
        """The Milvus client (one per session); ``read_only`` never creates a Lite file that is not there."""
        if self._client is None:
            from .milvus import connect, is_lite

            uri = self.settings.uri
            if read_only and is_lite(uri) and not Path(uri).expanduser().exists():
                raise TextimgError(f"no Milvus Lite file at {uri}: index a folder first (textimg index FOLDER), "
                                   "or check --uri / TEXTIMG_MILVUS_URI")
            self._client = connect(uri, self.settings.milvus_token, self.settings.service_idle)
        return self._client

    def load_encoder(self):
        """The CLIP encoder of the session's model, loaded once."""
        if self._encoder is None:
            from .encoders import load_encoder

            if self.random_weights:
                self.announce(f"--random-weights: {self.model} architecture with RANDOM weights (fixed seed): "
                              "results are meaningless, for speed and mechanics checks only")
            self._encoder = load_encoder(self.model, self.settings.device, self.random_weights)
        return self._encoder

    @property
    def text_model(self) -> str:
        """``clip`` (the image model's own text encoder), ``multilingual``, or a sentence-transformers folder."""
        return self.settings.text_model

    @property
    def query_model_name(self) -> str:
        """The model a collection must have been built with for this session's text queries."""
        return self.model_name if self.text_model == "clip" else CLIP_MODEL

    def load_text_encoder(self):
        """The text encoder for queries: the multilingual one if asked for, else the image model's."""
        if self.text_model == "clip":
            return self.load_encoder()
        from .multilingual import load_text_encoder

        cache = None
        if self.settings.cache is not None and self.text_model == "multilingual":
            from .bundle import text_model_cache

            cache = str(text_model_cache(self.settings.cache))
        return load_text_encoder(self.text_model, self.settings.device, cache_folder=cache)

    def image_folder(self) -> Path:
        """The profile's images, generated (shapes) or downloaded and extracted (clip) the first time."""
        from .data import shapes_images
        from .downloads import tutorial_images

        data_dir = self.settings.data_dir
        if self.profile == "clip" and self.settings.cache is not None:
            from .bundle import bundle_images

            return bundle_images(self.settings.cache, data_dir)  # extracted from the folder's zip, no download
        return shapes_images(data_dir) if self.profile == "shapes" else tutorial_images(data_dir)

    @property
    def query(self) -> str:
        """The profile's known query (``a red circle``, ``a goldfish``)."""
        return QUERIES[self.profile].known

    @property
    def expected(self) -> str:
        """The label of the known query's right answers (``red_circle``, ``goldfish``)."""
        return QUERIES[self.profile].expected

    @property
    def demo_query(self) -> str:
        """The query ``textimg demo`` and notebook 00 search for (``a white dog``, ``a red circle``)."""
        return QUERIES[self.profile].demo

    def index(self, folder=None, *, progress: bool = True, verbose: bool = True, ocr: bool = False):
        """Index ``folder`` (default: the profile's images) incrementally into the session's collection,
        with the session's encoder, and return the report; ``ocr`` also reads the words in the pictures
        (``textimg index --ocr``); ``index_folder`` itself takes the other options."""
        from .ingest import index_folder

        return index_folder(self.connect(), self.collection_name, folder or self.image_folder(), self.load_encoder(),
                            progress=progress, verbose=verbose, ocr=ocr)


def open_session(**changes) -> Session:
    """The notebooks' setup call: settings from ``TEXTIMG_*`` (``changes`` override them), the Milvus
    client and the encoder; ``session.index()`` then indexes the profile's images (incremental: quick
    when done)."""
    session = Session.from_settings(Settings.from_env().with_(**changes))
    session.connect()
    session.load_encoder()
    return session
