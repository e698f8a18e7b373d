"""What reading the words costs: ``index`` vs ``index --ocr`` on phone-size photos, with and without text.

    python benchmarks/bench_ocr.py --random-weights [--images DIR] [--n N] [--rounds R]

N real photos (ImageNet samples) are scaled up to 4032 x 3024 JPEGs (a 12 Mpx phone photo), once as
they are and once with a sign (a word on a plate, turned by a few degrees) pasted on them. Each round
indexes each folder into a fresh collection with ``index_folder``, without and with ``ocr=True``, in
turns (the machine is shared and noisy); the round with the median ratio is reported. The words stage
includes loading the OCR models once per run, as the CLI does. ViT-B/32 with RANDOM weights, on the CPU.
"""

from __future__ import annotations

import argparse
import random
import statistics

from common import DEFAULT_IMAGES, LABEL, image_paths, load_random_encoder, machine, temp_dir, timed

PHONE = (4032, 3024)
WORDS = ["BAKERY", "Station 12", "PHARMACY", "Platform 7", "MUSEUM", "INVOICE 5531", "EXIT", "Gate B12"]


def phone_photos(paths, folder, with_sign: bool):
    """Each photo scaled up to 4032 x 3024 and saved as a JPEG (quality 90), with a sign if asked."""
    from PIL import Image, ImageDraw, ImageFont

    folder.mkdir(parents=True)
    for n, path in enumerate(paths):
        img = Image.open(path).convert("RGB").resize(PHONE, Image.Resampling.BICUBIC)
        if with_sign:
            font, word = ImageFont.load_default(150), WORDS[n % len(WORDS)]
            left, top, right, bottom = font.getbbox(word)
            plate = Image.new("RGB", (right - left + 120, bottom - top + 120), (245, 240, 225))
            ImageDraw.Draw(plate).text((60 - left, 60 - top), word, font=font, fill=(20, 20, 20))
            angle = random.Random(n).uniform(-15, 15)
            mask = Image.new("L", plate.size, 255).rotate(angle, expand=True)
            img.paste(plate.rotate(angle, expand=True), (600 + 97 * n % 1500, 700 + 53 * n % 1200), mask)
        img.save(folder / f"{path.stem}.jpg", quality=90)
    return folder


def index_once(client, name, folder, encoder, ocr: bool):
    """One run into a fresh collection: (images/s, report)."""
    from textimg_helpers.ingest import index_folder

    report, seconds = timed(index_folder, client, name, folder, encoder, ocr=ocr, progress=False, verbose=False)
    return report.indexed / seconds, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-weights", action="store_true", required=True,
                        help="required: no real weights here; every figure is for random weights")
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from textimg_helpers.milvus import connect

    paths = image_paths(args.images, args.n)
    print(f"machine: {machine()}")
    print(f"model: {LABEL}; {len(paths)} photos from {args.images}, scaled up to {PHONE[0]}x{PHONE[1]} JPEGs")
    encoder = load_random_encoder()
    with temp_dir() as tmp:
        plain, signs = phone_photos(paths, tmp / "plain", False), phone_photos(paths, tmp / "signs", True)
        client = connect(str(tmp / "bench.db"))
        rounds = []
        for r in range(args.rounds):
            runs = {}
            for key, folder, ocr in (("plain", plain, False), ("plain_ocr", plain, True),
                                     ("signs", signs, False), ("signs_ocr", signs, True)):
                runs[key] = index_once(client, f"bench_{key}_{r}", folder, encoder, ocr)
            rounds.append(runs)
            print(f"  round {r + 1}: " + ", ".join(f"{k} {rate:.2f} images/s" for k, (rate, _) in runs.items()))
        report(rounds)
        for key in ("plain", "signs"):
            read = client.query(f"bench_{key}_ocr_0", filter='text != ""', output_fields=["text"])
            print(f"{key}: words read in {len(read)} of {len(paths)} photos, e.g. {[r['text'] for r in read[:4]]}")
        client.close()
    print(f"after: {machine().split('; ')[-1]}")


def report(rounds: list[dict]) -> None:
    """The median round's rates and ratios, and what the words stage found."""
    ratios = [runs["plain"][0] / runs["plain_ocr"][0] for runs in rounds]
    runs = rounds[sorted(range(len(rounds)), key=ratios.__getitem__)[len(rounds) // 2]]
    for key, what in (("plain", "photos without text"), ("signs", "photos with a sign")):
        (rate, base), (ocr_rate, with_ocr) = runs[key], runs[key + "_ocr"]
        words_s = with_ocr.stage_seconds.get("words", 0.0)
        print(f"{what}: index {rate:.2f} images/s, index --ocr {ocr_rate:.2f} images/s: --ocr costs "
              f"{rate / ocr_rate:.2f}x (words stage {1000 * words_s / with_ocr.indexed:.0f} ms per photo, "
              f"models loaded once included)")
    print(f"ratio index --ocr / index on photos without text, every round: "
          f"{', '.join(f'{r:.2f}x' for r in ratios)} (median {statistics.median(ratios):.2f}x)")


if __name__ == "__main__":
    main()
