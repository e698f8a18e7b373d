"""Phone photos: how fast ``index_folder`` reads a phone library against the small sample photos.

    python benchmarks/bench_phone.py --random-weights [--images DIR] [--n 40] [--rounds 3] [--library DIR]

The same N photos are written as a phone would write them, 4:3 (the centre of each, upscaled): 12 MP
JPEG (4032x3024, quality 90, EXIF), 12 MP HEIC in 512-pixel tiles with a 320x240 thumbnail (as an iPhone
writes it), 12 MP HEIC without a thumbnail, 24 MP JPEG (5712x4284); the small photos are the originals
(about 500x375). Each kind is indexed by ``index_folder`` into a fresh collection, once a round, the
small photos first and last in each (their rate is the mean of the two); each kind's rate is printed
beside theirs, as the median over the rounds of its ratio to that round's, in wall time and in CPU time
of the process. Then the read stage alone: ``load_image`` per file of each kind, the photo metadata
(EXIF + digest), and full decodes of HEICs without a thumbnail, one or two at once, each with 1 or 4 of
pillow-heif's decode threads. HEIC files are encoded with x265's ``ultrafast`` preset (``--preset``):
1.2 s a photo instead of 12 s; ``--library DIR`` keeps the library for the next run (files already there
are kept). ViT-B/32 architecture with RANDOM weights, CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from common import DEFAULT_IMAGES, LABEL, image_paths, load_random_encoder, machine, other_load, temp_dir, timed

KINDS = {  # folder -> (what, long side in pixels or None for the original, file suffix, thumbnails)
    "small": ("small JPEG (original size)", None, ".jpg", None),
    "jpeg12": ("12 MP JPEG", 4032, ".jpg", None),
    "heic12_thumb": ("12 MP HEIC (512-px tiles, 320x240 thumbnail)", 4032, ".heic", [320]),
    "heic12": ("12 MP HEIC (512-px tiles, no thumbnail)", 4032, ".heic", []),
    "jpeg24": ("24 MP JPEG", 5712, ".jpg", None),
}


def phone_exif():
    """The EXIF an iPhone writes that the index reads: camera, date taken, orientation 1."""
    from PIL import Image

    exif = Image.Exif()
    exif[271], exif[272], exif[274] = "Apple", "iPhone 13", 1
    exif.get_ifd(0x8769)[36867] = "2024:06:01 12:00:00"
    return exif


def write_photo(source: Path, target: Path, long_side: int | None, thumbnails, preset: str) -> None:
    """One photo of the library: the original linked, or upscaled and saved as a phone would."""
    from PIL import Image, ImageOps

    if long_side is None:
        target.symlink_to(source.resolve())
        return
    with Image.open(source) as img:  # a phone's 4:3 frame: the centre of the photo, upscaled
        img = ImageOps.fit(img.convert("RGB"), (long_side, long_side * 3 // 4), Image.Resampling.BICUBIC)
    if thumbnails is None:
        img.save(target, quality=90, exif=phone_exif())
    else:
        img.save(target, format="HEIF", quality=80, tile_size=512, thumbnails=thumbnails,
                 exif=phone_exif().tobytes(), enc_params={} if preset == "default" else {"preset": preset})


def build_library(paths: list[Path], root: Path, preset: str) -> dict[str, Path]:
    """A folder per kind under ``root`` (files already there are kept: ``--library`` reuses them)."""
    import textimg_helpers.data  # noqa: F401  registers the HEIF opener

    folders = {}
    for kind, (_, long_side, suffix, thumbnails) in KINDS.items():
        folders[kind] = root / kind
        folders[kind].mkdir(parents=True, exist_ok=True)
        for path in paths:
            target = folders[kind] / (path.stem + suffix)
            if not target.exists() and not target.is_symlink():
                write_photo(path, target, long_side, thumbnails, preset)
    return folders


def index_rate(client, encoder, folder: Path, collection: str, batch_size: int, workers):
    """images/s of ``index_folder`` on ``folder`` into a fresh collection, images per CPU-second of this
    process (the Milvus Lite service's share not counted), and its report."""
    from textimg_helpers.ingest import index_folder

    if client.has_collection(collection):
        client.drop_collection(collection)
    cpu = time.process_time()  # every thread of this process: less moved by other processes than the wall
    report, seconds = timed(index_folder, client, collection, folder, encoder, batch_size=batch_size,
                            num_workers=workers, progress=False, verbose=False)
    assert report.indexed == len(list(folder.iterdir())), report
    return report.indexed / seconds, report.indexed / (time.process_time() - cpu), report


def read_ms(files: list[Path], size: int) -> tuple[float, float]:
    """Milliseconds per file of ``load_image`` + ``pixels`` as the reader calls them, and of the photo
    metadata ``row_for`` reads (EXIF date, camera, GPS, size, digest), one thread."""
    from textimg_helpers.data import load_image, photo_metadata, pixels

    read_s = timed(lambda: [pixels(load_image(p, 2 * size, min_side=size), size) for p in files])[1]
    meta_s = timed(lambda: [photo_metadata(p) for p in files])[1]
    return 1000 * read_s / len(files), 1000 * meta_s / len(files)


def decode_threads_ms(files: list[Path]) -> dict[str, float]:
    """Wall ms per full decode of a HEIC (no thumbnail): one file at a time or two at once (the reader's
    two threads on two cores), each with pillow-heif's decode threads at 1 or at its default (4)."""
    from concurrent.futures import ThreadPoolExecutor

    import pillow_heif
    from textimg_helpers.data import load_image

    figures, default = {}, pillow_heif.options.DECODE_THREADS
    for at_once in (1, 2):
        for threads in (1, default):
            pillow_heif.options.DECODE_THREADS = threads
            with ThreadPoolExecutor(at_once) as pool:
                seconds = timed(lambda: list(pool.map(load_image, files)))[1]
            figures[f"{at_once} file(s) at once, {threads} decode thread(s) each"] = 1000 * seconds / len(files)
    pillow_heif.options.DECODE_THREADS = default
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of images (default: %(default)s)")
    parser.add_argument("--random-weights", action="store_true", required=True,
                        help="required: no real weights here; every figure is for random weights")
    parser.add_argument("--n", type=int, default=40, help="photos per kind (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, help="reader processes (default: the project's default)")
    parser.add_argument("--preset", default="ultrafast", help="x265 preset of the HEIC files, or "
                        "'default': libheif's own, 10 times slower to write (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="each kind indexed this many times; the "
                        "median round is reported (default: %(default)s)")
    parser.add_argument("--library", help="keep the phone library in this folder and reuse it next time")
    args = parser.parse_args()

    from milvus_lite.server_manager import server_manager_instance
    from textimg_helpers.milvus import connect

    paths = image_paths(args.images, args.n)
    print(f"machine: {machine()}")
    print(f"model: {LABEL}; the same {len(paths)} photos from {args.images} as each kind")
    with temp_dir() as tmp:
        library, build_s = timed(build_library, paths, Path(args.library or tmp / "library"), args.preset)
        print(f"library built in {build_s:.0f} s; {other_load()} before indexing")
        encoder = load_random_encoder()
        uri = str(tmp / "phone.db")
        client = connect(uri)
        rates, cpu_rates, reports = run_rounds(client, encoder, library, args)
        load = other_load()
        client.close()
        server_manager_instance.release_server(uri)
        print_table(rates, reports, load)
        print_cpu(cpu_rates)
        print_reads(library, encoder.resolution)


def run_rounds(client, encoder, library: dict, args) -> tuple[dict, dict, dict]:
    """Each kind indexed once a round, the small photos first and last: per kind, a list per round of
    images/s and of images per CPU-second (two for the small photos), and each kind's last report."""
    rates, cpu_rates, reports = {k: [] for k in KINDS}, {k: [] for k in KINDS}, {}
    for r in range(args.rounds):  # the machine is shared and noisy: each round has its own small rate
        round_rates, round_cpu = {}, {}
        for i, kind in enumerate(list(KINDS) + ["small"]):
            rate, cpu_rate, reports[kind] = index_rate(client, encoder, library[kind], f"phone_{r}_{i}",
                                                       args.batch_size, args.workers)
            round_rates.setdefault(kind, []).append(rate)
            round_cpu.setdefault(kind, []).append(cpu_rate)
        for kind in KINDS:
            rates[kind].append(round_rates[kind])
            cpu_rates[kind].append(round_cpu[kind])
    return rates, cpu_rates, reports


def print_table(rates: dict, reports: dict, load: str) -> None:
    """The table: each kind's median images/s over the rounds, and its median ratio to the small photos'
    rate of the same round (the mean of that round's first and last run)."""
    small = [sum(r) / len(r) for r in rates["small"]]
    print(f"\nindex_folder, {len(small)} rounds, {load} after indexing; small photos per round: "
          f"{', '.join(' and '.join(f'{x:.1f}' for x in r) for r in rates['small'])} images/s (first and last)")
    print("| the same photos as | images/s | vs small | ratio per round | read, encode, write (s) | read as |")
    print("|---|---|---|---|---|---|")
    for kind, (what, *_) in KINDS.items():
        mine = small if kind == "small" else [r[0] for r in rates[kind]]
        ratios = [m / s for m, s in zip(mine, small)]
        report = reports[kind]
        stages = ", ".join(f"{v:.1f}" for v in report.stage_seconds.values())
        print(f"| {what} | {statistics.median(mine):.1f} | {statistics.median(ratios):.2f} | "
              f"{', '.join(f'{x:.2f}' for x in ratios)} | {stages} | {report.read_paths() or '-'} |")


def print_cpu(cpu_rates: dict) -> None:
    """The same ratios in CPU time: images per CPU-second of this process, kind over small photos."""
    small = [sum(r) / len(r) for r in cpu_rates["small"]]
    print("\nin CPU time of this process (images per CPU-second; ratio to the small photos' of the round):")
    for kind, (what, *_) in KINDS.items():
        mine = small if kind == "small" else [r[0] for r in cpu_rates[kind]]
        ratios = [m / s for m, s in zip(mine, small)]
        print(f"    {what}: {statistics.median(mine):.1f} images/CPU-s, {statistics.median(ratios):.2f} "
              f"({', '.join(f'{x:.2f}' for x in ratios)})")


def print_reads(library: dict, size: int) -> None:
    """Where a file's read time goes, per kind, one thread; then pillow-heif's decode threads."""
    print(f"\nread stage alone, one thread, ms per file (load_image + pixels at {size} px; photo metadata):")
    for kind, (what, *_) in KINDS.items():
        files = sorted(library[kind].iterdir())[:10]
        read, meta = read_ms(files, size)
        print(f"    {what}: read {read:.1f} ms, metadata {meta:.2f} ms")
    files = sorted(library["heic12"].iterdir())[:6]
    print(f"HEIC without thumbnail, full decode ({os.cpu_count()} cores), ms per file:")
    for what, ms in decode_threads_ms(files).items():
        print(f"    {what}: {ms:.0f} ms")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")
