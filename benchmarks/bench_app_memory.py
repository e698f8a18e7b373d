"""Memory of ``textimg app``: Voilà and the page kernels after several page loads, after they are
culled, and after ``textimg app`` itself is killed with SIGKILL.

    python benchmarks/bench_app_memory.py [--loads 5] [--cull-idle 10]

Each page load (a GET of the printed address, token included, as a reload or a new tab does) renders the
page in a kernel of its own; no browser stays connected, so each is a closed tab. The shapes profile
is used (offline): a kernel holds the page's widgets and the small shapes CLIP, less than ViT-B/32 would.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
from common import REPO, machine, temp_dir


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def tree(pid: int) -> list[psutil.Process]:
    try:
        return [proc for proc in psutil.Process(pid).children(recursive=True) if proc.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def kernels(pid: int) -> list[psutil.Process]:
    return [proc for proc in tree(pid) if any("ipykernel" in part for part in proc.cmdline())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--cull-idle", type=float, default=10.0)
    args = parser.parse_args()
    print(machine())
    with temp_dir() as tmp:
        env = {**os.environ, "TEXTIMG_PROFILE": "shapes", "TEXTIMG_DATA_DIR": str(tmp / "data")}
        subprocess.run([sys.executable, "-m", "textimg_helpers", "demo"], env=env, cwd=tmp, check=True,
                       capture_output=True)
        app = subprocess.Popen([sys.executable, "-m", "textimg_helpers", "app", "--port", "0",
                                "--cull-idle", str(args.cull_idle)], env=env, cwd=tmp, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in app.stdout], daemon=True).start()
        url = re.search(r"serving (\S+) ", lines.get(timeout=120)).group(1)
        print(f"Voila alone: {rss_mb(tree(app.pid)):.0f} MB")
        for i in range(args.loads):
            with urllib.request.urlopen(url, timeout=300) as reply:
                reply.read()
            print(f"after page load {i + 1}: {len(kernels(app.pid))} kernels, Voila and kernels "
                  f"{rss_mb(tree(app.pid)):.0f} MB")
        start = time.monotonic()
        while kernels(app.pid) and time.monotonic() - start < 10 * args.cull_idle + 120:
            time.sleep(1)
        print(f"{time.monotonic() - start:.0f} s later (--cull-idle {args.cull_idle:g}): {len(kernels(app.pid))} "
              f"kernels, Voila and kernels {rss_mb(tree(app.pid)):.0f} MB")
        left = tree(app.pid)
        app.send_signal(signal.SIGKILL)
        app.wait()
        _, alive = psutil.wait_procs(left, timeout=20)
        print(f"after SIGKILL of textimg app: {len(alive)} of its processes still running "
              f"({rss_mb(alive):.0f} MB)")
        for proc in alive:
            proc.kill()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
