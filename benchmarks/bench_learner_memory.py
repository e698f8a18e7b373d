"""Memory of one learner's session as the notebooks leave it: 00-05 run in order, each in its own kernel,
every kernel kept open (a learner rarely closes one), and the Milvus Lite service they share.

    python benchmarks/bench_learner_memory.py [--profile shapes|clip] [--images DIR]

``shapes`` (the default) is the offline profile. ``clip`` lays out a ``textimg download`` folder with a
RANDOM-weights ViT-B/32 checkpoint (real size, real cost) and a zip of the photos of ``--images`` in a
temporary folder, and runs the notebooks from it offline (``TEXTIMG_CACHE``); the cells whose lesson asserts on
the labels of the hits fail with random weights and are counted, the kernel runs on.

For each kernel, and for the service (its process and the ``milvus`` binary), psutil's RSS, PSS (shared
pages divided among the processes that share them: the sum over processes is what the machine holds)
and USS; then the sums, and each notebook's wall time on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import psutil
from common import DEFAULT_IMAGES, REPO, machine, temp_dir

MB = 2 ** 20
NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb"))


class Kernel:
    """A live kernel that runs a notebook's code cells one by one; errors are counted, not raised."""

    def __init__(self, env: dict, cwd: Path):
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd))
        self.errors: list[str] = []

    def run(self, code: str, timeout: float = 900) -> None:
        def collect(msg):
            if msg["msg_type"] == "error":
                self.errors.append(f"{msg['content']['ename']}: {msg['content']['evalue'][:160]}")

        self.client.execute_interactive(code, timeout=timeout, output_hook=collect)

    def run_notebook(self, path: Path) -> float:
        """Run every code cell; returns the seconds it took."""
        start = time.perf_counter()
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                self.run("".join(cell["source"]))
        return time.perf_counter() - start

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.manager.provisioner.process.pid)

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def memory(procs: list[psutil.Process]) -> dict[str, float]:
    """RSS, PSS and USS summed over ``procs``, in MB."""
    total = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        for key in total:
            total[key] += getattr(info, key) / MB
    return total


def service_processes(folder: Path) -> list[psutil.Process]:
    """The Milvus Lite service of a file under ``folder``: its Python process and the ``milvus`` binary."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(folder) in cmdline and ("textimg_helpers.service.process" in cmdline or "milvus" in cmdline.split()[0]):
            found.append(proc)
            found += [child for child in proc.children(recursive=True) if child not in found]
    return list({proc.pid: proc for proc in found}.values())


def clip_folder(tmp: Path, images: Path) -> Path:
    """A ``textimg download`` folder: a random ViT-B/32 (fp16, as OpenAI's file) and a zip of ``images``
    laid out as the tutorial's archive (in the temporary folder; each learner extracts it)."""
    import zipfile

    import torch

    from textimg_helpers.bundle import record_file
    from textimg_helpers.encoders import random_model

    folder = tmp / "offline"
    (folder / "clip").mkdir(parents=True)
    torch.save({k: v.half() for k, v in random_model("ViT-B/32").state_dict().items()}, folder / "clip" / "ViT-B-32.pt")
    record_file(folder, "clip/ViT-B-32.pt")
    with zipfile.ZipFile(folder / "reverse_image_search.zip", "w") as archive:
        for path in sorted(images.iterdir()):
            archive.write(path, f"reverse_image_search/train/{path.name}")
    record_file(folder, "reverse_image_search.zip")
    return folder


def report(rows: list[tuple], service: dict, seconds: dict) -> None:
    print(f"{'kernel':<20} {'RSS MB':>8} {'PSS MB':>8} {'USS MB':>8} {'run s':>7} errors")
    for name, mem, errors in rows:
        print(f"{name:<20} {mem['rss']:8.0f} {mem['pss']:8.0f} {mem['uss']:8.0f} {seconds[name]:7.1f} {errors}")
    print(f"{'Milvus Lite service':<20} {service['rss']:8.0f} {service['pss']:8.0f} {service['uss']:8.0f}")
    kernels = {key: sum(mem[key] for _, mem, _ in rows) for key in ("rss", "pss", "uss")}
    print(f"{'all six kernels':<20} {kernels['rss']:8.0f} {kernels['pss']:8.0f} {kernels['uss']:8.0f} "
          f"{sum(seconds.values()):7.1f}")
    print(f"one learner (kernels + service): PSS {kernels['pss'] + service['pss']:.0f} MB, "
          f"RSS sum {kernels['rss'] + service['rss']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["shapes", "clip"], default="shapes")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="photos for --profile clip")
    args = parser.parse_args()
    print(machine(), f"load average {os.getloadavg()[0]:.2f}")
    with temp_dir() as tmp:
        env = {**os.environ, "TEXTIMG_PROFILE": args.profile, "TEXTIMG_DATA_DIR": str(tmp / "data")}
        if args.profile == "clip":
            env["TEXTIMG_CACHE"] = str(clip_folder(tmp, args.images))
        kernels, rows, seconds = {}, [], {}
        try:
            for path in NOTEBOOKS:
                kernels[path.stem] = kernel = Kernel(env, path.parent)
                seconds[path.stem] = kernel.run_notebook(path)
                print(f"ran {path.stem} in {seconds[path.stem]:.1f} s ({len(kernel.errors)} errors)", flush=True)
            time.sleep(2)
            for name, kernel in kernels.items():
                rows.append((name, memory([kernel.process, *kernel.process.children(recursive=True)]),
                             "; ".join(kernel.errors)[:200] or "-"))
            report(rows, memory(service_processes(tmp)), seconds)
        finally:
            for kernel in kernels.values():
                kernel.shutdown()
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
