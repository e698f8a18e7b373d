"""Settings: one small object resolved from ``TEXTIMG_*`` environment variables."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

__all__ = ["BUNDLE_MANIFEST", "CLIP_CACHE", "CLIP_MODEL", "CLIP_MODELS", "HOST", "MULTILINGUAL_MODEL", "PROFILES",
           "SHAPES_CHECKPOINT", "SHAPES_MODEL_NAME", "Settings", "TEXT_MODELS", "TextimgError", "check_model",
           "check_text_model", "clip_file_name", "default_collection", "error_text", "first_line", "free_port",
           "host_reachable", "is_open_clip_name", "last_line", "model_for_name", "model_for_profile",
           "model_name", "resolved_path"]

PROFILES = ("auto", "clip", "shapes")
CLIP_MODEL = "ViT-B/32"
# clip.available_models(), without importing torch (tests check that the two agree)
CLIP_MODELS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
               "ViT-L/14@336px")
CLIP_CACHE = Path(os.path.expanduser("~/.cache/clip"))  # where clip.load keeps its weights
SHAPES_CHECKPOINT = Path(__file__).parent / "assets" / "shapes_clip.pt"
SHAPES_MODEL_NAME = "shapes-clip"
RANDOM_SUFFIX = "+random"
# Text models: "clip" is the image model's own text encoder; "multilingual" reads 50+ languages into
# ViT-B/32's space (text only: the images stay with ViT-B/32); a folder is a sentence-transformers model.
TEXT_MODELS = ("clip", "multilingual")
MULTILINGUAL_MODEL = "sentence-transformers/clip-ViT-B-32-multilingual-v1"
# The list of files of a folder made by ``textimg download`` (TEXTIMG_CACHE / --from): see bundle.py.
BUNDLE_MANIFEST = "textimg-download.json"


class TextimgError(Exception):
    """An error with a message meant for the user (the CLI prints it as one line)."""


def first_line(exc: BaseException, limit: int | None = None, sentence: bool = False) -> str:
    """The first line of an error's message ("" when it has none); with ``sentence``, only up to its
    first ``". "``; at most ``limit`` characters."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if sentence:
        first = first.split(". ")[0]
    return first[:limit]


def error_text(exc: BaseException) -> str:
    """The first line of an error, as the CLI and the pages show it (with the type when it is not ours)."""
    first = first_line(exc)
    if isinstance(exc, TextimgError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (a log), stripped; "" when there is none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def resolved_path(path: str | os.PathLike) -> Path:
    """The one spelling of a path: absolute, ``~``, ``..`` and symbolic links resolved (a folder of
    images, a Milvus Lite file), however it is typed."""
    return Path(path).expanduser().resolve()


HOST = "127.0.0.1"  # where TCP servers of this package listen (``textimg app``), never another address


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds (a download's
    host, or a server of ours on ``HOST``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A port on ``HOST`` where nothing listens now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def default_data_dir() -> Path:
    """``data/`` of the source checkout when running from one, else ``./data``."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").exists():
        return root / "data"
    return Path.cwd() / "data"


@dataclass(frozen=True)
class Settings:
    """Where things live and which model to use; ``repr`` never shows the token."""

    profile: str = "auto"
    model: str | None = None
    milvus_uri: str | None = None
    milvus_token: str = field(default="", repr=False)
    data_dir: Path = field(default_factory=default_data_dir)
    device: str = "auto"
    collection_name: str | None = None
    service_idle: float = 60.0  # seconds a shared Milvus Lite service waits for a client, then stops
                                # (TEXTIMG_SERVICE_IDLE; the one default, read by the service's starters)
    text_model: str = "clip"
    cache: Path | None = None  # a folder made by ``textimg download`` (TEXTIMG_CACHE / --from): no network

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise TextimgError(f"TEXTIMG_PROFILE={self.profile!r} is not one of {', '.join(PROFILES)}")
        check_text_model(self.text_model)
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.cache is not None:
            object.__setattr__(self, "cache", Path(self.cache).expanduser())
        try:
            object.__setattr__(self, "service_idle", float(self.service_idle))
        except ValueError:
            raise TextimgError(f"TEXTIMG_SERVICE_IDLE={self.service_idle!r} is not a number of seconds") from None
        if not self.service_idle > 0:  # a service that never stops is `textimg serve`, not an idle time of 0
            raise TextimgError(f"TEXTIMG_SERVICE_IDLE={self.service_idle:g}: give the seconds a shared Milvus Lite "
                               "service waits for a client before it stops, above 0 (for a service that runs "
                               "until stopped, use textimg serve)")
        if self.collection_name is not None:
            check_collection_name(self.collection_name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read ``TEXTIMG_*`` variables (``os.environ`` by default); unset ones keep defaults."""
        env = os.environ if env is None else env
        get = lambda key: env.get(f"TEXTIMG_{key}") or None  # noqa: E731
        values = dict(profile=get("PROFILE"), model=get("MODEL"), milvus_uri=get("MILVUS_URI"),
                      milvus_token=get("MILVUS_TOKEN"), data_dir=get("DATA_DIR"),
                      device=get("DEVICE"), collection_name=get("COLLECTION"),
                      service_idle=get("SERVICE_IDLE"), text_model=get("TEXT_MODEL"),
                      cache=get("CACHE"))
        return cls(**{k: v for k, v in values.items() if v is not None})

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def uri(self) -> str:
        """The Milvus URI: a Milvus Lite file under ``data_dir`` unless set."""
        return self.milvus_uri or str(self.data_dir / "milvus.db")


COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")  # what Milvus accepts as a collection name


def check_collection_name(name: str) -> None:
    """Refuse a collection name Milvus would refuse, with one that it takes."""
    if not COLLECTION_NAME.fullmatch(name):
        safe = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")[:255] or "photos"
        safe = safe if re.match(r"[A-Za-z_]", safe) else "_" + safe[:254]
        raise TextimgError(f"collection name {name!r} is not allowed: Milvus takes letters, digits and _, starting "
                           f"with a letter or _, at most 255 characters (--collection / TEXTIMG_COLLECTION), "
                           f"e.g. {safe!r}")


def model_for_profile(profile: str, model: str | None) -> str:
    """The model to load for a resolved profile (``clip`` or ``shapes``); ``--model shapes`` names the
    shipped shapes checkpoint."""
    if model == "shapes":
        return str(SHAPES_CHECKPOINT)
    if model:
        return model
    return CLIP_MODEL if profile == "clip" else str(SHAPES_CHECKPOINT)


def is_open_clip_name(model: str) -> bool:
    """True for an ``ARCH/PRETRAINED`` name as open_clip writes them (``ViT-B-32/laion2b_s34b_b79k``): not
    one of OpenAI's names, not a file; open_clip itself checks the pair when the model loads."""
    parts = model.split("/")
    return model not in CLIP_MODELS and len(parts) == 2 and all(parts) and not Path(model).exists()


def check_model(model: str) -> None:
    """Refuse a model that is neither a CLIP name, an open_clip pair nor a file, before anything else runs."""
    if model not in CLIP_MODELS and not Path(model).is_file() and not is_open_clip_name(model):
        raise TextimgError(f"model {model!r} is neither a CLIP name ({', '.join(CLIP_MODELS)}), an open_clip "
                           "ARCH/PRETRAINED pair (textimg models lists some) nor an existing checkpoint file")


def check_text_model(text_model: str) -> None:
    """Refuse a text model that is neither ``clip``, ``multilingual`` nor a folder (nothing is loaded)."""
    if text_model not in TEXT_MODELS and not Path(text_model).expanduser().is_dir():
        raise TextimgError(f"text model {text_model!r} is neither {' nor '.join(TEXT_MODELS)} nor a folder "
                           "holding a sentence-transformers model (TEXTIMG_TEXT_MODEL / --text-model)")


def clip_file_name(model: str) -> str:
    """The file ``clip.load`` keeps a CLIP model's weights in (``ViT-B/32`` -> ``ViT-B-32.pt``)."""
    return model.replace("/", "-").replace("@", "-") + ".pt"


def bundled_clip_name(model: str) -> str | None:
    """The CLIP name of a weights file in a ``textimg download`` folder (``DIR/clip/ViT-B-32.pt``), else None."""
    path = Path(model)
    if path.parent.name != "clip" or not (path.parent.parent / BUNDLE_MANIFEST).is_file():
        return None
    return next((name for name in CLIP_MODELS if clip_file_name(name) == path.name), None)


def model_name(model: str, random_weights: bool = False) -> str:
    """The name stored with a collection: ``ViT-B/32`` (a name, or its weights in a ``textimg download``
    folder), ``shapes-clip``, a checkpoint's file stem."""
    if Path(model).resolve() == SHAPES_CHECKPOINT.resolve():
        name = SHAPES_MODEL_NAME
    elif bundled_clip_name(model):
        name = bundled_clip_name(model)
    elif Path(model).is_file() or model.endswith((".pt", ".pth")):
        name = Path(model).stem
    else:
        name = model
    return name + (RANDOM_SUFFIX if random_weights else "")


def model_for_name(name: str) -> tuple[str, bool]:
    """What to load for a model name a collection stored (``model_name``'s inverse): ``(model,
    random_weights)``. A checkpoint's file stem (other than the shipped shapes model) cannot be found
    again from its name: one ``TextimgError`` says so."""
    random_weights = name.endswith(RANDOM_SUFFIX)
    base = name[:-len(RANDOM_SUFFIX)] if random_weights else name
    if base == SHAPES_MODEL_NAME:
        return str(SHAPES_CHECKPOINT), random_weights
    if base in CLIP_MODELS or is_open_clip_name(base):
        return base, random_weights
    raise TextimgError(f"the collection was built with the checkpoint {base!r}: start with --model <its .pt file> "
                       "to search it")


def default_collection(name: str) -> str:
    """A collection name per model (``textimg_vit_b_32``), so models never mix by default."""
    return "textimg_" + re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
