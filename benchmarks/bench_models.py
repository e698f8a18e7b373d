"""Speed of each model ``textimg models`` lists: images/s and one query's latency, RANDOM weights.

    python benchmarks/bench_models.py [--images 64] [--queries 20] [--device cpu] [--write]

Each model is built with random weights (its real architecture: the cost is real, the vectors mean
nothing), in fp32 on the CPU (or --device), then times batches of 16 random 8-bit pictures at the
model's resolution and the median of --queries one-sentence text encodings. With --write, the figures
go to textimg_helpers/assets/model_speed.json, which ``textimg models`` shows beside the published
quality. A model whose tokenizer needs a download (SigLIP's) is timed for images only offline.
"""

from __future__ import annotations

import argparse
import json
import time

from common import machine


def main() -> None:
    from textimg_helpers.config import TextimgError
    from textimg_helpers.models import MODELS, SPEED_FILE, measure_speed, models_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action="store_true", help=f"save the figures to {SPEED_FILE.name}")
    args = parser.parse_args()
    where = machine()
    print(where)
    speed = {"what": f"measured with random weights, fp32, {args.device}, by benchmarks/bench_models.py",
             "machine": where.split(";")[0], "date": time.strftime("%Y-%m-%d"), "models": {}}
    for model in MODELS:
        start = time.perf_counter()
        try:
            figures = measure_speed(model.name, images=args.images, queries=args.queries, device=args.device)
        except TextimgError as exc:
            print(f"{model.name}: not timed: {exc}")
            continue
        speed["models"][model.name] = figures
        query = f"{figures['query_ms']:6.1f} ms" if "query_ms" in figures else "     - (no tokenizer here)"
        print(f"{model.name:<34} dim {figures['dim']:>4}  {figures['images_per_s']:7.2f} images/s  "
              f"query {query}  ({time.perf_counter() - start:.0f} s with building it)")
    ratio = speed["models"].get("ViT-B/32", {}).get("images_per_s")
    if ratio:
        for name, figures in speed["models"].items():
            print(f"  {name:<34} {figures['images_per_s'] / ratio:5.2f}x the tutorial model's images/s")
    if args.write:
        SPEED_FILE.write_text(json.dumps(speed, indent=1) + "\n")
        print(f"written to {SPEED_FILE}")
    print()
    print(models_table(speed))


if __name__ == "__main__":
    main()
