"""Peak memory of ingestion for 100 and for 400 images, each in a fresh process.

    python benchmarks/bench_rss.py --random-weights [--images DIR] [--sizes 100 400]

The child process loads ViT-B/32 (RANDOM weights), opens a fresh Milvus Lite file and runs
``index_folder``; a thread samples every 20 ms the RSS of the process plus the unique memory (USS)
of its DataLoader workers (forked: their shared pages are the parent's, counted once). Also shown:
``ru_maxrss`` of the process, the plain RSS sum, and the Milvus Lite server (a separate process).
Target: the peak at 400 images within 15% of the peak at 100.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading

from common import DEFAULT_IMAGES, LABEL, image_paths, link_images, load_random_encoder, machine, temp_dir

MB = 2 ** 20


class PeakSampler(threading.Thread):
    """Samples the process tree until stopped; keeps the peaks in MB."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self.me, self.interval, self.done = psutil.Process(), interval, threading.Event()
        self.peak = {"main_plus_workers_uss": 0.0, "rss_sum": 0.0, "milvus_server": 0.0, "workers": 0}

    def run(self) -> None:
        import psutil

        while not self.done.wait(self.interval):
            try:
                main = self.me.memory_info().rss
                workers, server = [], 0
                for child in self.me.children(recursive=True):
                    if "milvus" in " ".join(child.cmdline()):
                        server += child.memory_info().rss
                    else:
                        workers.append(child.memory_full_info())
            except psutil.Error:  # a worker ended while being read
                continue
            self._keep("main_plus_workers_uss", (main + sum(w.uss for w in workers)) / MB)
            self._keep("rss_sum", (main + sum(w.rss for w in workers)) / MB)
            self._keep("milvus_server", server / MB)
            self._keep("workers", len(workers))

    def _keep(self, key: str, value: float) -> None:
        self.peak[key] = max(self.peak[key], value)


def child(images: str, n: int, batch_size: int) -> None:
    """Index ``n`` images in this fresh process and print the peaks as one JSON line."""
    import resource

    from textimg_helpers.ingest import index_folder
    from textimg_helpers.milvus import connect

    paths = image_paths(images, n)
    encoder = load_random_encoder()
    with temp_dir() as tmp:
        folder = link_images(paths, tmp / "images")
        client = connect(str(tmp / "rss.db"))
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sampler = PeakSampler()
        sampler.start()
        report = index_folder(client, "rss", folder, encoder, batch_size=batch_size, progress=False, verbose=False)
        sampler.done.set()
        sampler.join()
        client.close()
    peak = dict(sampler.peak, n=report.indexed, baseline_maxrss=baseline,
                main_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                workers_maxrss=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    print(json.dumps(peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of images (default: %(default)s)")
    parser.add_argument("--random-weights", action="store_true", required=True,
                        help="required: no real weights here; every figure is for random weights")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.images, args.child, args.batch_size)
    image_paths(args.images)  # exits with a message when the folder is absent
    print(f"machine: {machine()}\nmodel: {LABEL}; batch_size={args.batch_size}")
    print(f"{'images':>6} {'after load':>10} {'main+workers':>12} {'RSS sum':>8} {'main maxrss':>11} "
          f"{'workers':>7} {'Milvus Lite':>11}  (MB; peaks)")
    peaks = {}
    for n in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--random-weights", "--images", args.images,
                               "--child", str(n), "--batch-size", str(args.batch_size)],
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-2000:])
        p = json.loads(done.stdout.strip().splitlines()[-1])
        peaks[n] = p["main_plus_workers_uss"]
        print(f"{p['n']:>6} {p['baseline_maxrss']:>10.0f} {p['main_plus_workers_uss']:>12.0f} "
              f"{p['rss_sum']:>8.0f} {p['main_maxrss']:>11.0f} {p['workers']:>7} {p['milvus_server']:>11.0f}")
    if len(peaks) >= 2:
        small, large = min(peaks), max(peaks)
        growth = peaks[large] / peaks[small] - 1
        print(f"peak at {large} vs {small}: {growth:+.1%} (target within 15%: "
              f"{'met' if abs(growth) <= 0.15 else 'MISSED'})")


if __name__ == "__main__":
    main()
