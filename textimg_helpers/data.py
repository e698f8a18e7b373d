"""Images on disk: finding them, reading them safely, labels, and the shapes data set (the tutorial's
photos are a download: ``downloads``)."""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import glob
import hashlib
import io
import os
import re
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, features

try:  # iPhone photos (.heic): a base dependency, but a missing one is a reason per file, not a crash
    from pillow_heif import register_heif_opener
except ImportError:
    HEIF_SUPPORT = False
else:
    register_heif_opener()
    HEIF_SUPPORT = True

from .config import TextimgError, resolved_path
from .shapes import generate_shapes

__all__ = ["HEIF_SUPPORT", "IMAGE_EXTENSIONS", "MAX_JPEG_PIXELS", "MAX_PIXELS", "MAX_UPLOAD_BYTES",
           "UnreadableImage", "check_image", "file_digest", "label_for", "list_image_paths", "load_image",
           "photo_metadata", "pixels", "raw_pair", "read_image_bytes", "read_query_image", "shapes_images",
           "walk_images", "wall_clock"]

HEIF_EXTENSIONS = {".heic", ".heif"}  # iPhone photos: pillow-heif (a base dependency)
RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".rw2", ".orf", ".raf"}  # camera RAW: rawpy (the raw extra)
IMAGE_EXTENSIONS = ({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".avif"}
                    | HEIF_EXTENSIONS | RAW_EXTENSIONS)
PAIRED_WITH = (".jpg", ".jpeg", ".heic", ".heif")  # a RAW file beside one of these of the same name is that photo
# Folders never walked unless --include-hidden: names starting with "." (.thumbnails, .git, .Trash-1000)
# and these (Synology's thumbnails, NAS and Windows recycle bins, Windows' system folder, JavaScript packages).
SYSTEM_FOLDERS = {"@eaDir", "#recycle", "$RECYCLE.BIN", "System Volume Information", "node_modules"}
MAX_PIXELS = 90_000_000  # larger images are refused as possible decompression bombs...
MAX_JPEG_PIXELS = 178_956_970  # ...except JPEGs (a 108 Mpx phone photo), decoded at 1/8 scale; Pillow's own limit
MAX_UPLOAD_BYTES = 50_000_000  # an uploaded query photo: larger ones are refused before any decoding
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG with more pictures after the first (phones' HDR gain map, depth)


def list_image_paths(folder: str | os.PathLike, include_hidden: bool = False,
                     exclude: tuple[str, ...] = ()) -> list[Path]:
    """Every image file under ``folder``, sorted, each once under its real path (``walk_images``)."""
    return walk_images(folder, include_hidden, exclude)[0]


def walk_images(folder: str | os.PathLike, include_hidden: bool = False,
                exclude: tuple[str, ...] = ()) -> tuple[list[Path], list[Path]]:
    """``(image paths, folders walked)``: every image file under ``folder``, sorted, each once under its
    real path (a file reached through a linked folder or a linked file is stored where it is), and the
    real folders walked (``folder`` first, then each linked folder outside it). Linked folders outside
    it are followed once; links to a folder inside it, to ``folder`` itself or to a folder holding it
    (``loop -> ..``) are not followed; folders named ``x.jpg`` are left out. Unless ``include_hidden``,
    files and folders whose name starts with ``.`` and ``SYSTEM_FOLDERS`` are left out; so are the paths
    (relative to ``folder``, with ``/``) that match one of the ``exclude`` globs (a folder that matches,
    with all it holds). A broken link is listed under its own path, so that it is reported."""
    root = resolved_path(folder)
    if not root.is_dir():
        raise TextimgError(f"folder not found: {folder}" if not root.exists() else f"not a folder: {folder}")
    inside, seen_dirs, paths, walked = str(root) + os.sep, set(), set(), [root]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a second link to the same folder
            dirnames.clear()
            continue
        seen_dirs.add(real)
        if real != dirpath and not any(real.startswith(str(w) + os.sep) for w in walked):
            walked.append(Path(real))
        dirnames[:] = sorted(d for d in dirnames if not _links_inside(os.path.join(dirpath, d), inside)
                             and _kept(root, Path(dirpath) / d, include_hidden, exclude, folder=True))
        paths |= {_real_file(Path(dirpath) / f) for f in filenames
                  if Path(f).suffix.lower() in IMAGE_EXTENSIONS and _is_file(os.path.join(dirpath, f))
                  and _kept(root, Path(dirpath) / f, include_hidden, exclude)}
    return sorted(paths), walked


def _real_file(path: Path) -> Path:
    """``path`` with its folders' and its own links resolved; a broken link stays as it is."""
    real = Path(os.path.realpath(path))
    return real if real.exists() else Path(os.path.realpath(path.parent)) / path.name


def _kept(root: Path, path: Path, include_hidden: bool, exclude: tuple[str, ...], folder: bool = False) -> bool:
    """False for a hidden or system name (unless ``include_hidden``) or a path an ``exclude`` glob matches."""
    name = path.name
    if not include_hidden and (name.startswith(".") or (folder and name in SYSTEM_FOLDERS)):
        return False
    relative = path.relative_to(root).as_posix()
    return not any(fnmatch.fnmatchcase(relative, glob) or fnmatch.fnmatchcase(relative + "/", glob)
                   for glob in exclude)


def raw_pair(path: Path) -> Path | None:
    """The JPEG or HEIC beside a RAW file with the same name (``IMG_1.CR2`` and ``IMG_1.JPG``), if any:
    the camera wrote both for one photo, which is then indexed once, from that file."""
    if path.suffix.lower() not in RAW_EXTENSIONS:
        return None
    siblings = {p.suffix.lower(): p for p in path.parent.glob(glob.escape(path.stem) + ".*")}
    return next((siblings[ext] for ext in PAIRED_WITH if ext in siblings), None)


def _links_inside(path: str, inside: str) -> bool:
    """A symlink to a folder under ``inside``, to it, or to a folder that holds it (a loop): never followed
    (the first is walked anyway under its real path)."""
    if not os.path.islink(path):
        return False
    real = os.path.realpath(path) + os.sep
    return real.startswith(inside) or inside.startswith(real)


def _is_file(path: str) -> bool:
    """A regular file, or a broken symlink (listed so that it is reported, not silently lost)."""
    return os.path.isfile(path) or (os.path.islink(path) and not os.path.exists(path))


class UnreadableImage(ValueError):
    """A file that is not a readable image; the message says why, in words a user can act on."""


def check_image(path: str | os.PathLike) -> None:
    """What the file's header tells, without decoding: ``UnreadableImage`` for an empty, text or unknown
    file or a decompression bomb (a truncated file passes: only decoding finds out)."""
    load_image(path, header_only=True)


def load_image(path: str | os.PathLike, max_side: int | None = None, header_only: bool = False,
               min_side: int | None = None) -> Image.Image:
    """Open an image as RGB: first frame, EXIF rotation applied, transparency on white.

    ``max_side`` (for encoding only) lets JPEG decode at reduced scale (a huge photo costs little) and
    keeps just the centre of a very long or tall image, the part CLIP's centre crop sees anyway.
    ``min_side`` (for encoding only: the model's input size) lets a HEIC/HEIF photo be read from its
    embedded thumbnail when that is at least this on its short side and is the same picture (same
    rotation, crop and colour profile); otherwise the full image is decoded. ``img.info["read_as"]``
    says which way the pixels were read: "full decode", "1/4 scale" (JPEG draft), "embedded thumbnail".
    Raises ``UnreadableImage`` for an empty, truncated or non-image file or a decompression bomb.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits are checked below
            return _decode(path, max_side, header_only, min_side)
    except Image.UnidentifiedImageError:
        raise UnreadableImage(_not_an_image(path)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"refused as a possible decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, UnreadableImage)):
            raise
        what = "truncated image file" if "truncated" in str(exc).lower() else "damaged image file"
        raise UnreadableImage(f"{what} ({exc})") from None


QUERY_READ_TIMEOUT = 30.0  # seconds a query image may take to read (a stalled network share never answers)


def read_query_image(path: str | os.PathLike, max_side: int | None = None, header_only: bool = False,
                     timeout: float = QUERY_READ_TIMEOUT):
    """``load_image`` for an image given as a query: a missing or unreadable file is one ``TextimgError``,
    and so is anything but a regular file (a FIFO or a device would block the read, or never end), or a
    file that takes over ``timeout`` seconds to read (the read goes on in a thread left behind)."""
    check_regular_file(path)  # also says "image not found"
    outcome: dict = {}

    def read():
        try:
            outcome["image"] = load_image(Path(path).expanduser(), max_side, header_only)
        except Exception as exc:
            outcome["error"] = exc

    reader = threading.Thread(target=read, daemon=True, name="textimg-query-image")
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise TextimgError(f"cannot read image {path}: no data after {timeout:g} s (a stalled network share "
                           "or disk?): copy it to a local folder and try again")
    if "error" in outcome:
        raise TextimgError(f"cannot read image {path}: {outcome['error']}") from None
    return outcome["image"]


def read_image_bytes(content: bytes, name: str, max_side: int | None = None) -> Image.Image:
    """An image given as bytes (a photo uploaded to the panel), checked like a query image file: at most
    ``MAX_UPLOAD_BYTES``, an image extension, a format Pillow reads (not RAW), the pixel limit. It is
    decoded from memory: nothing is written to disk. One ``TextimgError`` when it cannot be used."""
    label = Path(name).name or "the upload"
    if len(content) > MAX_UPLOAD_BYTES:
        raise TextimgError(f"cannot read image {label}: {len(content) / 1e6:.1f} MB, over the "
                           f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB an uploaded photo may have")
    suffix = Path(label).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS or suffix in RAW_EXTENSIONS:
        raise TextimgError(f"cannot read image {label}: upload a photo as .jpg, .png, .webp, .heic "
                           "(a camera RAW file: its JPEG)")
    buffer = io.BytesIO(content)
    buffer.name = label  # the decoder reads the extension (HEIC, AVIF) from it
    try:
        return load_image(buffer, max_side)
    except UnreadableImage as exc:
        raise TextimgError(f"cannot read image {label}: {exc}") from None


SPECIAL_FILES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                 (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: str | os.PathLike) -> None:
    """Refuse a query image that is missing or not a regular file, without opening it (``stat`` never blocks)."""
    try:
        mode = os.stat(Path(path).expanduser()).st_mode
    except FileNotFoundError:
        raise TextimgError(f"image not found: {path}") from None
    except OSError as exc:
        raise TextimgError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in SPECIAL_FILES if test(mode)), "a special file")
        raise TextimgError(f"cannot read image {path}: not a regular file ({kind})")


def _decode(path: str | os.PathLike, max_side: int | None, header_only: bool = False,
            min_side: int | None = None) -> Image.Image | None:
    """Decode the first frame with the pixel limit, JPEG draft scaling or a HEIF thumbnail, EXIF rotation, RGB
    (``path`` may be a file object with a ``name``)."""
    suffix = Path(getattr(path, "name", path)).suffix.lower()
    if suffix in RAW_EXTENSIONS:
        return _decode_raw(path, max_side, header_only)
    if suffix in HEIF_EXTENSIONS and not HEIF_SUPPORT:
        raise UnreadableImage("HEIC/HEIF photos need pillow-heif, which is not installed: pip install pillow-heif")
    if suffix == ".avif" and not features.check("avif"):
        raise UnreadableImage("AVIF needs a Pillow built with AVIF (Pillow >= 11.2): pip install -U pillow")
    with Image.open(path) as img:  # reads the header only: the size is checked before any decoding
        check_pixels(img.width, img.height, img.format)
        if header_only:
            return None
        read_as = _reduce(img, max_side, min_side)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an unrotated 12 Mpx photo
        img = crop_centre(shrink(img, max_side)) if max_side else img
        img = img if img.mode == "RGB" else to_rgb(img)
        img.info["read_as"] = read_as
        return img


def _reduce(img: Image.Image, max_side: int | None, min_side: int | None) -> str:
    """Ask the decoder for fewer pixels before it decodes, and say how it will read them: a JPEG at
    1/2, 1/4 or 1/8 scale (still at least ``min_side``, else ``max_side``, on each side), a HEIF photo
    from an embedded thumbnail of at least ``min_side`` on each side that pillow-heif finds to be the
    same picture (rotation, mirroring, crop, colour profile; EXIF stays the full image's), else all of it."""
    width, side = img.width, min_side or max_side
    if side and img.format in JPEG_FORMATS:
        img.draft("RGB", (side, side))
        return f"1/{round(width / img.width)} scale" if img.width < width else "full decode"
    if min_side and img.format in ("HEIF", "AVIF") and img.draft(None, (min_side, min_side)) is not None:
        return "embedded thumbnail"  # an AVIF read by Pillow itself has no thumbnails: its draft does nothing
    return "full decode"


def check_pixels(width: int, height: int, format: str | None) -> None:
    """Refuse an image whose header claims more pixels than ``MAX_PIXELS`` (``MAX_JPEG_PIXELS`` for a
    JPEG, decoded at reduced scale), before anything is decoded."""
    limit = MAX_JPEG_PIXELS if format in JPEG_FORMATS else MAX_PIXELS
    if width * height > limit:
        raise UnreadableImage(f"refused as a possible decompression bomb: {width}x{height} is {width * height:,} "
                              f"pixels, over the limit of {limit:,} pixels for {format or 'these'} files")


def shrink(img: Image.Image, max_side: int) -> Image.Image:
    """A large decoded image reduced by a whole factor (box filter), its short side still at least
    ``max_side``, before any conversion copies it (an 81 Mpx RGBA PNG then peaks at its decoded size)."""
    factor = min(img.size) // max_side
    if factor < 2 or img.mode not in ("RGB", "RGBA", "L", "LA", "I", "F", "CMYK", "RGBX"):
        return img
    return img.reduce(factor)


def _decode_raw(path: str | os.PathLike, max_side: int | None, header_only: bool = False) -> Image.Image | None:
    """A camera RAW file: its embedded preview when it has one (fast), else the sensor data demosaiced
    at half size (CLIP sees 224 pixels anyway), with the camera's white balance."""
    try:
        import rawpy
    except ImportError:
        raise UnreadableImage('RAW photos need rawpy, which is not installed: pip install "textimg-helpers[raw]"') from None
    try:
        with rawpy.imread(str(path)) as raw:
            if raw.sizes.raw_width * raw.sizes.raw_height > MAX_JPEG_PIXELS:
                raise UnreadableImage(f"refused as a possible decompression bomb: {raw.sizes.raw_width}x"
                                      f"{raw.sizes.raw_height} sensor")
            if header_only:
                return None
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
                img = Image.open(io.BytesIO(thumb.data))
                if max_side:
                    img.draft("RGB", (max_side, max_side))
                img.load()
                img = ImageOps.exif_transpose(img)
            elif thumb is not None:
                img = Image.fromarray(thumb.data)
            else:
                img = Image.fromarray(raw.postprocess(use_camera_wb=True, half_size=True, output_bps=8))
    except rawpy.LibRawError as exc:
        raise UnreadableImage(f"damaged or unsupported RAW file ({type(exc).__name__})") from None
    return to_rgb(crop_centre(img) if max_side else img)


EXIF_DATE_TAKEN, EXIF_IFD, GPS_IFD, MAKE, MODEL, ORIENTATION = 36867, 34665, 34853, 271, 272, 274


def photo_metadata(path: str | os.PathLike, mtime_ns: int | None = None) -> dict:
    """What a photo says about itself, from its header (nothing is decoded): ``taken`` (seconds since
    1970 of the local wall-clock time, from EXIF ``DateTimeOriginal``, else the file's modification time,
    as ``taken_from`` says), ``camera`` ("Make Model", or ""), ``lat``/``lon`` (only with GPS),
    ``width``/``height`` (as shown, EXIF rotation applied; 0 when unknown) and ``digest`` (a hash of
    the size and the first and last 64 KB: equal for identical files, which ``duplicates`` confirms)."""
    meta = {"taken": 0, "taken_from": "mtime", "camera": "", "width": 0, "height": 0, "digest": file_digest(path)}
    exif = {}
    with contextlib.suppress(Exception):  # any file Pillow cannot open still gets its dates and digest
        with Image.open(path) as img:
            exif, (width, height) = img.getexif(), img.size
            if exif.get(ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
            meta["width"], meta["height"] = width, height
    taken = exif_date(exif.get_ifd(EXIF_IFD).get(EXIF_DATE_TAKEN) if exif else None)
    if taken is not None:
        meta["taken"], meta["taken_from"] = taken, "exif"
    else:
        mtime = (mtime_ns if mtime_ns is not None else os.stat(path).st_mtime_ns) / 1e9
        meta["taken"] = wall_clock(datetime.datetime.fromtimestamp(mtime))
    meta["camera"] = " ".join(dict.fromkeys(str(exif.get(tag, "")).strip("\0 ") for tag in (MAKE, MODEL)
                                            if str(exif.get(tag, "")).strip("\0 ")))[:256] if exif else ""
    position = gps_position(exif.get_ifd(GPS_IFD)) if exif else None
    if position is not None:
        meta["lat"], meta["lon"] = position
    return meta


def wall_clock(moment: datetime.datetime) -> int:
    """A local date and time as seconds since 1970 of that wall-clock reading (no time zone: EXIF has none)."""
    return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp())


def exif_date(value) -> int | None:
    """``"2023:06:01 14:03:22"`` -> ``wall_clock`` seconds; ``None`` for a missing or malformed date."""
    try:
        return wall_clock(datetime.datetime.strptime(str(value).strip("\0 ")[:19], "%Y:%m:%d %H:%M:%S"))
    except (TypeError, ValueError):
        return None


def gps_position(gps) -> tuple[float, float] | None:
    """(lat, lon) in degrees from an EXIF GPS block, ``None`` when it has none or a malformed one."""
    try:
        def degrees(dms, ref) -> float:
            d, m, s_ = (float(x) for x in dms)
            value = d + m / 60 + s_ / 3600
            return -value if str(ref).upper().startswith(("S", "W")) else value

        lat, lon = degrees(gps[2], gps[1]), degrees(gps[4], gps[3])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def file_digest(path: str | os.PathLike, part: int = 65536) -> str:
    """blake2b of the size and the first and last ``part`` bytes: cheap, equal for identical files."""
    digest = hashlib.blake2b(digest_size=16)
    with contextlib.suppress(OSError):
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest.update(str(size).encode())
            digest.update(f.read(part))
            if size > 2 * part:
                f.seek(-part, os.SEEK_END)
                digest.update(f.read(part))
    return digest.hexdigest()


def _not_an_image(path: str | os.PathLike) -> str:
    """Why PIL could not identify ``path`` (or bytes in memory): empty, text or HTML, or an unknown format."""
    if isinstance(path, io.BytesIO):
        head = path.getvalue()[:512]
    else:
        with open(path, "rb") as f:
            head = f.read(512)
    if not head:
        return "empty file (0 bytes)"
    if head.lstrip().startswith(b"<") or all(b in b"\t\n\r" or 32 <= b < 127 for b in head):
        return "not an image: the file holds text or HTML (a web page saved with an image extension?)"
    return "not an image format Pillow can read"


def crop_centre(img: Image.Image, max_ratio: float = 2.0) -> Image.Image:
    """Cut a very long or tall image to ``max_ratio`` around its centre (resizing a 1x30000 strip
    to CLIP's input would otherwise allocate gigabytes for pixels the centre crop throws away)."""
    w, h = img.size
    if w <= max_ratio * h and h <= max_ratio * w:
        return img
    new_w, new_h = min(w, max(1, round(max_ratio * h))), min(h, max(1, round(max_ratio * w)))
    left, top = (w - new_w) // 2, (h - new_h) // 2
    return img.crop((left, top, left + new_w, top + new_h))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (RGBA, P, LA, I;16, CMYK, ...) to RGB the way it looks."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit or float grayscale
        values = np.asarray(img, dtype=np.float32)
        scale = 257.0 if values.max() > 255 else 1.0
        img = Image.fromarray(np.clip(values / scale, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def pixels(img, size: int = 224) -> np.ndarray:
    """CLIP's resize (short side to ``size``, bicubic) and centre crop of an RGB PIL image, as a
    (size, size, 3) uint8 array. One PIL call resizes only the part the crop keeps: the same pixels
    as ``preprocess`` up to rounding at the crop's edges, for less work, and without torch, so a
    reader thread does not compete with the model's threads."""
    w, h = img.size
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # torchvision Resize
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))  # CenterCrop
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    img = img if img.mode == "RGB" else img.convert("RGB")
    # Over 3x smaller (a photo decoded whole), PIL first averages whole blocks of pixels (reducing_gap):
    # a quarter of the time for a 12 Mpx HEIC, and below 3x (CLIP's own inputs) the very same pixels.
    return np.array(img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0))


def label_for(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """A label from the sub-folder (``train/<label>/x.jpg``) or the file name.

    File names: ``<wnid>_<label>.JPEG`` (ImageNet) and ``<label>_<nnnn>.png`` (shapes).
    """
    path = Path(path)
    if root is not None and path.parent != Path(root) and Path(root) in path.parents:
        return path.parent.name
    stem = re.sub(r"^n\d{8}_", "", path.stem)
    return re.sub(r"_\d+$", "", stem) if stem else path.stem


def shapes_images(data_dir: str | os.PathLike, per_class: int = 12, seed: int = 2024) -> Path:
    """Generate (once) the shapes profile's images under ``data_dir/shapes``; returns the folder."""
    folder = Path(data_dir) / "shapes"
    generate_shapes(folder, per_class=per_class, seed=seed)
    return folder
