"""A learner's walk through the tutorial, without a browser: every notebook in its own kernel, every
kernel kept alive to the end, the ``textimg`` command in between, and 04's panel used again last.

nbval cannot see what this checks: it shuts each notebook's kernel down before the next starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import ROOT, run_textimg

NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


class Kernel:
    """A live kernel that runs code cells and raises on the first error, with its traceback."""

    def __init__(self, env: dict, cwd: Path):
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd))

    def run(self, code: str, timeout: float = 300) -> list[str]:
        """Run ``code``; returns the text it showed."""
        shown, errors = [], []

        def collect(msg):
            content = msg["content"]
            if msg["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))
            elif msg["msg_type"] == "stream":
                shown.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                shown.append(content["data"].get("text/plain", ""))

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=collect)
        if reply["content"]["status"] != "ok" or errors:
            raise AssertionError(f"cell failed:\n{code}\n" + "\n".join(errors))
        return shown

    def run_notebook(self, path: Path) -> None:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                self.run("".join(cell["source"]))

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def test_every_notebook_kernel_alive_then_the_cli_and_the_panel(tmp_path):
    changes = {"TEXTIMG_DATA_DIR": str(tmp_path / "data"), "TEXTIMG_BF16": "0"}
    env = {**os.environ, **changes}
    kernels: dict[str, Kernel] = {}
    try:
        for path in NOTEBOOKS:
            kernels[path.stem] = kernel = Kernel(env, path.parent)
            kernel.run_notebook(path)  # the kernels of the notebooks before are still alive
            if path.stem.startswith("01"):  # a terminal indexes while 00 and 01 hold the file
                indexed = run_textimg("index", tmp_path / "data" / "shapes", "-q", env=changes)
                assert indexed.code == 0 and indexed.out.strip().endswith("total=480"), indexed.err
            if path.stem >= "01":
                search = run_textimg("search", "a blue square", "-k", "3", env=changes)
                assert search.code == 0, f"after {path.stem}: {search.err}"
                assert all("/blue_square_" in line for line in search.out.splitlines()), search.out
        # the learner goes back to 04's panel, whose kernel has lived through all of the above
        shown = kernels["04_visualization"].run(
            "import json\n"
            "panel.query.value = 'a blue square'\n"
            "panel.submit.click()\n"
            "searched, chosen = [hit.label for hit in panel.hits], panel.hits[2]\n"
            "panel.more_buttons[2].click()  # more like this\n"
            "print(json.dumps([searched, chosen.filepath, panel.hits[0].filepath, panel.status.value]))")
        searched, chosen, first, status = json.loads(shown[-1])
        assert searched[:5] == ["blue_square"] * 5 and first == chosen, (searched, chosen, first)
        assert "top " in status and "#b00020" not in status, status  # no red error line
    finally:
        for kernel in kernels.values():
            kernel.shutdown()
