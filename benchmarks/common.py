"""Shared plumbing for the benchmarks: the sample images, temp folders, timing, the machine."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "imagenet-sample"  # 400 real ImageNet photos, one per class
MODEL = "ViT-B/32"
LABEL = "ViT-B/32, RANDOM weights"


def image_paths(folder: str | os.PathLike, n: int | None = None, seed: int = 0) -> list[Path]:
    """The images in ``folder`` (a fixed random sample of ``n`` of them); exits if absent."""
    from textimg_helpers.data import list_image_paths

    folder = Path(folder)
    if not folder.is_dir():
        sys.exit(f"skipped: image folder {folder} not found (pass --images DIR, a folder of real photos, "
                 "e.g. 400 ImageNet samples, one per class)")
    paths = list_image_paths(folder)
    if n is not None and n < len(paths):
        paths = sorted(random.Random(seed).sample(paths, n))
    return paths


@contextmanager
def temp_dir(prefix: str = "textimg-bench-"):
    """A temporary folder under /tmp, removed afterwards with the services of its Milvus Lite files."""
    from textimg_helpers.service.client import stop_services_under

    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        stop_services_under(path)  # a Milvus Lite file's shared service outlives its clients
        shutil.rmtree(path, ignore_errors=True)


def link_images(paths: list[Path], folder: Path) -> Path:
    """A folder of symlinks to ``paths`` (the images are never copied into the repo)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return statistics.median(ms), p95


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def load_random_encoder():
    """ViT-B/32 with random weights (fixed seed) on the CPU: real architecture, real cost."""
    from textimg_helpers.encoders import load_encoder

    return load_encoder(MODEL, "cpu", random_weights=True)


def other_load() -> str:
    """The 1-minute load average and any training job still running (the machine is shared)."""
    load = os.getloadavg()[0]
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    busy = [line for line in out.splitlines() if "train_shapes" in line and "grep" not in line]
    return f"load avg {load:.2f}" + (" (train_shapes running)" if busy else "")


def machine() -> str:
    """One line: cores, torch and its threads, milvus-lite and pymilvus versions, load."""
    from importlib.metadata import version

    import torch

    return (f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"milvus-lite {version('milvus-lite')}, pymilvus {version('pymilvus')}, Python "
            f"{sys.version.split()[0]}; {other_load()}")
