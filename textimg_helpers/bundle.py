"""One download for many machines: the folder ``textimg download --to DIR`` fills, and its use offline.

The folder holds what the ``clip`` profile needs, laid out the way the tools that read it expect:

    DIR/textimg-download.json          what is there: each file's size and sha256, the images' count
    DIR/clip/ViT-B-32.pt               CLIP's weights, as ``clip.load(download_root=DIR/clip)`` keeps them
    DIR/reverse_image_search.zip       the tutorial's images, extracted into each learner's data folder
    DIR/huggingface/                   the multilingual text model (``--text-model multilingual``), a hub cache

Another machine reads it with no network (``TEXTIMG_CACHE=DIR`` or ``--from DIR``): checking it costs
one small JSON file and a few ``stat`` calls (the sha256 were checked when the files came). The folder
is only read, so one read-only copy serves every learner of a hub; the images are extracted into each
learner's own data folder, as a download would be (notebook 02 adds, touches and deletes files there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from .config import (BUNDLE_MANIFEST, CLIP_MODEL, CLIP_MODELS, MULTILINGUAL_MODEL, TextimgError, clip_file_name)
from .downloads import DATASET_DIR, DATASET_URL, download, extract, zip_ok

__all__ = ["bundle_images", "bundle_problem", "check_bundle", "download_bundle", "fix_command", "read_manifest",
           "record_file", "sha256_file", "text_model_cache", "weights_file"]

IMAGES_ZIP = Path(DATASET_URL).name  # reverse_image_search.zip
HF_CACHE = "huggingface"


def weights_file(folder: Path, model: str) -> Path:
    """Where the folder keeps a CLIP model's weights (``DIR/clip/ViT-B-32.pt``)."""
    return Path(folder) / "clip" / clip_file_name(model)


def bundle_images(folder: Path, data_dir: Path) -> Path:
    """The tutorial's images from the folder's archive, extracted once into ``data_dir`` (the learner's
    own, as ``downloads.tutorial_images`` does after a download); returns their ``train/``."""
    target = Path(data_dir) / DATASET_DIR
    if not (target / "train").is_dir():
        archive = Path(folder) / IMAGES_ZIP
        if not zip_ok(archive):
            raise TextimgError(f"{archive} is corrupt (zip check failed): run {fix_command(folder)}")
        extract(archive, target)
    return target / "train"


def text_model_cache(folder: Path) -> Path:
    """The Hugging Face cache holding the multilingual text model (``DIR/huggingface``)."""
    return Path(folder) / HF_CACHE


def read_manifest(folder: Path) -> dict:
    """The folder's list of files (empty lists for a folder without one)."""
    path = Path(folder) / BUNDLE_MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    manifest.setdefault("files", {})
    manifest.setdefault("text_models", [])
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write the list of files whole (a temporary file renamed: never half written)."""
    tmp = Path(folder) / (BUNDLE_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(Path(folder) / BUNDLE_MANIFEST)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_file(folder: Path, relative: str, sha256: str | None = None) -> None:
    """Add a file of the folder to its list, with its size and sha256 (computed when not given)."""
    path = Path(folder) / relative
    manifest = read_manifest(folder)
    manifest["files"][relative] = {"size": path.stat().st_size, "sha256": sha256 or sha256_file(path)}
    write_manifest(folder, manifest)


def fix_command(folder: Path, model: str | None = CLIP_MODEL, text_model: str = "clip") -> str:
    """The command that completes the folder."""
    command = f"textimg download --to {folder}"
    command += f" --model {model}" if model and model != CLIP_MODEL else ""
    return command + (" --text-model multilingual" if text_model == "multilingual" else "")


def bundle_problem(folder: Path, model: str | None = CLIP_MODEL, images: bool = True,
                   text_model: str = "clip") -> str | None:
    """One line naming the first missing or bad file the ``clip`` profile needs (``model``'s weights when
    it is a CLIP name, the images, the multilingual text model) and the command that fixes it; None when
    the folder has them all."""
    folder = Path(folder)
    fix = fix_command(folder, model, text_model)
    if not (folder / BUNDLE_MANIFEST).is_file():
        return f"{folder} is not a textimg download folder (no {BUNDLE_MANIFEST}): run {fix}"
    manifest = read_manifest(folder)
    if model in CLIP_MODELS:
        relative = weights_file(folder, model).relative_to(folder).as_posix()
        if problem := file_problem(folder, relative, manifest["files"].get(relative)):
            return f"{problem}: run {fix}"
    if images and (problem := file_problem(folder, IMAGES_ZIP, manifest["files"].get(IMAGES_ZIP))):
        return f"{problem}: run {fix}"
    if text_model == "multilingual" and "multilingual" not in manifest["text_models"]:
        return f"{text_model_cache(folder)} lacks the multilingual text model: run {fix}"
    return None


def file_problem(folder: Path, relative: str, entry: dict | None) -> str | None:
    """``<path> is missing`` or ``<path> is incomplete or corrupt (...)``, or None for a file of the list
    that has its size."""
    path = folder / relative
    if entry is None or not path.is_file():
        return f"{path} is missing"
    if path.stat().st_size != entry["size"]:
        return f"{path} is incomplete or corrupt ({path.stat().st_size:,} bytes, not {entry['size']:,})"
    return None


def check_bundle(folder: Path, model: str | None = CLIP_MODEL, images: bool = True, text_model: str = "clip") -> None:
    """Stop with ``bundle_problem``'s line when the folder lacks something."""
    if problem := bundle_problem(folder, model, images, text_model):
        raise TextimgError(problem)


def download_bundle(folder: Path, models=(CLIP_MODEL,), images: bool = True, text_model: str = "clip",
                    announce: Callable = print) -> None:
    """Fill ``folder`` with the models' weights, the tutorial's images and (``multilingual``) the text
    model: each verified (sha256, zip CRC), a cut download resumed, what is there already kept."""
    folder = Path(folder)
    for model in models:
        if model not in CLIP_MODELS:
            raise TextimgError(f"textimg download takes OpenAI's CLIP names ({', '.join(CLIP_MODELS)}), not "
                               f"{model!r}")
    folder.mkdir(parents=True, exist_ok=True)
    for model in models:
        fetch_weights(folder, model, announce)
    if images:
        fetch_images(folder, announce)
    if text_model == "multilingual":
        fetch_text_model(folder, announce)
    announce(f"complete: copy {folder} to the other machines, then TEXTIMG_CACHE={folder} (or --from {folder})")


def clip_url(model: str) -> str:
    """openai/CLIP's address of a model's weights; the folder before the file name is their sha256."""
    import warnings

    with warnings.catch_warnings():  # openai/CLIP imports pkg_resources
        warnings.simplefilter("ignore")
        import clip
    return clip.clip._MODELS[model]


def fetch_weights(folder: Path, model: str, announce: Callable) -> None:
    """Download a CLIP model's weights unless the file there has the sha256 its address names."""
    url = clip_url(model)
    sha256 = url.split("/")[-2]
    dest = weights_file(folder, model)
    relative = dest.relative_to(folder).as_posix()
    if not (dest.is_file() and sha256_file(dest) == sha256):
        download(url, dest, check=lambda path: path.is_file() and sha256_file(path) == sha256, what="sha256")
    record_file(folder, relative, sha256)
    announce(f"ok  {relative} (CLIP {model}, sha256 {sha256[:12]}...)")


def fetch_images(folder: Path, announce: Callable) -> None:
    """Download the tutorial's images (their zip, CRC checked), unless the folder has them already."""
    archive = download(DATASET_URL, Path(folder) / IMAGES_ZIP)  # kept when it is there and whole
    record_file(folder, IMAGES_ZIP)
    announce(f"ok  {IMAGES_ZIP} ({archive.stat().st_size / 1e6:.0f} MB, zip CRC checked)")


def fetch_text_model(folder: Path, announce: Callable) -> None:
    """Download the multilingual text model into the folder's Hugging Face cache (the hub checks each
    file and resumes a cut one)."""
    from .multilingual import load_text_encoder

    load_text_encoder("multilingual", "cpu", cache_folder=str(text_model_cache(folder)))
    manifest = read_manifest(folder)
    manifest["text_models"] = sorted(set(manifest["text_models"]) | {"multilingual"})
    write_manifest(folder, manifest)
    announce(f"ok  {HF_CACHE}/ ({MULTILINGUAL_MODEL})")
