"""Downloads: the tutorial's image archive (fetched by pooch, resumed, checked, extracted whole) and
whether a host can be reached at all.

pooch's ``HTTPDownloader`` does the transfer (requests, proxies, the progress bar); pooch itself cannot
resume a cut download (``pooch.retrieve`` writes each try to a new temporary file), so the ``Range``
request that continues a ``.part`` file, the zip's CRC check and the all-or-nothing extraction are here.
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path

from .config import TextimgError, first_line

__all__ = ["DATASET_DIR", "download", "extract", "tutorial_images", "zip_ok"]

DATASET_URL = "https://github.com/towhee-io/examples/releases/download/data/reverse_image_search.zip"
DATASET_DIR = "reverse_image_search"


def tutorial_images(data_dir: str | os.PathLike, url: str = DATASET_URL) -> Path:
    """The tutorial's ImageNet subset (downloaded and extracted once); returns its ``train/``."""
    target = Path(data_dir) / DATASET_DIR
    if not (target / "train").is_dir():
        archive = download(url, Path(data_dir) / Path(url).name)
        extract(archive, target)
    return target / "train"


def download(url: str, dest: Path, retries: int = 3, timeout: float = 30, check=None, what: str = "zip") -> Path:
    """Download with a progress bar, resume after an interruption, and check the file (a zip's CRC, or
    ``check(path)``, named ``what`` in the error)."""
    import requests

    check = check or zip_ok
    if dest.is_file() and check(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            if not check(part):  # a complete .part (stopped before its rename) needs no request
                _fetch(url, part, timeout)
            if not check(part):
                part.unlink()
                raise ValueError(f"the {'archive' if what == 'zip' else 'file'} is corrupt ({what} check failed), "
                                 "downloading it again")
            part.replace(dest)
            return dest
        except (requests.RequestException, OSError, ValueError) as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 416:  # .part does not fit the file
                part.unlink(missing_ok=True)
            if attempt == retries:
                raise TextimgError(f"could not download {url} ({_reason(exc)}); without internet use the offline "
                                   "profile: TEXTIMG_PROFILE=shapes") from None
            time.sleep(2 ** attempt)
    return dest


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` with pooch's ``HTTPDownloader`` (a ``Range`` header when
    ``part`` has bytes already); a connection cut short raises, the bytes received stay for a resume."""
    from pooch import HTTPDownloader
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with open(part, "ab") as out, tqdm(initial=have, unit="B", unit_scale=True, desc=part.name) as bar:
            progress = ResumedBar(bar, have)

            def restart_if_whole(response, *args, **kwargs):
                if have and response.status_code == 200:  # the server ignored Range: the whole file comes
                    out.truncate(0)
                    progress.have = bar.n = 0

            HTTPDownloader(progressbar=progress, headers=headers, timeout=timeout,
                           hooks={"response": restart_if_whole})(url, out, None)
    finally:
        if part.is_file() and not part.stat().st_size:  # nothing came: leave no empty .part
            part.unlink()


class ResumedBar:
    """pooch's progress bar protocol (``total``, ``update``, ``reset``, ``close``) on a tqdm bar that
    starts at the ``have`` bytes already on disk, so that a resumed download shows the whole file."""

    def __init__(self, bar, have: int):
        self.bar, self.have = bar, have

    def __bool__(self) -> bool:
        return True

    @property
    def total(self):
        return self.bar.total

    @total.setter
    def total(self, rest: int):  # pooch sets the response's length: what is left to download
        self.bar.total = self.have + rest if rest else None
        self.bar.refresh()

    def update(self, n: int) -> None:  # pooch counts whole chunks: never past the end
        self.bar.update(min(n, self.bar.total - self.bar.n) if self.bar.total else n)

    def reset(self) -> None:  # pooch's last step: reset(), then update(total)
        self.bar.n = self.have

    def close(self) -> None:
        self.bar.refresh()


def _reason(exc: BaseException) -> str:
    """One short line for a failed try: no connection, an HTTP status, or the error's first line."""
    import requests

    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection was cut before the end"
    if isinstance(exc, requests.ConnectionError):
        host = requests.utils.urlparse(exc.request.url).netloc if exc.request is not None else "the server"
        return f"no connection to {host}"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    return first_line(exc, 200) or type(exc).__name__


def zip_ok(path: Path) -> bool:
    """True when ``path`` is a complete zip whose every member passes its CRC check."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def extract(archive: Path, target: Path) -> None:
    """Extract into a temporary folder, then move it in place: never half-extracted."""
    tmp = target.with_name(target.name + ".extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TextimgError(f"could not extract {archive} ({exc}): delete it and run again") from None
    inner = [p for p in tmp.iterdir() if not p.name.startswith("__MACOSX")]
    source = inner[0] if len(inner) == 1 and inner[0].is_dir() and not (tmp / "train").exists() else tmp
    shutil.rmtree(target, ignore_errors=True)
    source.replace(target)
    shutil.rmtree(tmp, ignore_errors=True)
