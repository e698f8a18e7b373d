"""The tutorial in a real browser, as a workshop uses it: one JupyterLab, the six notebooks opened one
after another with Run All and their kernels left running, then 04's live panel: a new query, Search,
"more like this". Screenshots go to outputs/browser_*.png.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it), driven by Playwright.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "outputs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium (apt-get install chromium)"),
]


@pytest.fixture
def jupyterlab(tmp_path):
    """``(url, token)`` of a JupyterLab serving a copy of the notebooks (the copies get the outputs)."""
    from textimg_helpers.config import free_port

    root = tmp_path / "notebooks"
    root.mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, root)
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    for name, values in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                         ("notebook-extension/tracker", {"windowingMode": "none",  # every cell in the page
                                                         "autoStartDefaultKernel": True})):
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    learner = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}  # Agg would hide every figure
    env = {**learner, "TEXTIMG_DATA_DIR": str(tmp_path / "data"), "TEXTIMG_BF16": "0",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces")}
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
                            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
                           env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if lab.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-2000:])
            time.sleep(0.5)
    yield url, token
    lab.terminate()
    lab.wait(timeout=30)


@pytest.fixture
def page():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def run_all(page, name: str):
    """Open notebook ``name`` from the file browser, Run All, wait until its last cell ran; returns its panel."""
    page.locator(".jp-DirListing-item", has_text=name).dblclick()
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    expect(notebook.locator(".jp-Notebook-cell").first).to_be_visible(timeout=60_000)
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    if select.count():  # JupyterLab may still ask which kernel: the notebook's own, as a learner answers
        select.click()
    expect(page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle")).to_be_visible(timeout=120_000)
    # a collapsed solution (input hidden) shows a placeholder, not its prompt: its output proves it ran
    prompts = notebook.locator(".jp-CodeCell:not(:has(.jp-InputPlaceholder)) .jp-InputPrompt")
    hidden = notebook.locator(".jp-CodeCell:has(.jp-InputPlaceholder)")
    count = prompts.count()
    for _ in range(3):  # a click while the kernel is still connecting can be lost: click again
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator("li[data-command='runmenu:run-all']").click()
        time.sleep(5)
        if any(prompts.nth(i).inner_text().strip() != "[ ]:" for i in range(count)):
            break
    deadline = time.monotonic() + 300
    while True:  # Run All stops at the first error: then the cells after it never get a number
        texts = [prompts.nth(i).inner_text() for i in range(count)]
        if all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in texts) and all(
                hidden.nth(i).locator(".jp-OutputArea-output").count() for i in range(hidden.count())):
            break
        errors = notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        tracebacks = [errors.nth(i).inner_text() for i in range(errors.count())]
        tracebacks = [t for t in tracebacks if "Traceback" in t or "Error" in t.splitlines()[0]]
        if tracebacks or time.monotonic() > deadline:
            page.screenshot(path=SCREENSHOTS / f"browser_failed_{Path(name).stem}.png", full_page=True)
            raise AssertionError(f"{name}: Run All did not finish: {texts}, {hidden.count()} collapsed cells\n"
                                 + "\n".join(tracebacks)[-3000:])
        time.sleep(0.5)
    return notebook


def card_labels(panel) -> list[str]:
    return [label.inner_text() for label in panel.locator(".widget-gridbox span[title]").all()]


def test_six_notebooks_run_all_then_the_panel_answers(jupyterlab, page):
    url, token = jupyterlab
    SCREENSHOTS.mkdir(exist_ok=True)
    page.goto(f"{url}/lab?token={token}")
    for path in NOTEBOOKS:  # each kernel stays alive while the next notebooks run
        notebook = run_all(page, path.name)
        page.screenshot(path=SCREENSHOTS / f"browser_{path.stem}.png")
        if path.stem == "00_setup":  # the pipeline picture travels inside the notebook, as a cell attachment
            picture = notebook.locator(".jp-MarkdownCell img[alt^='The pipeline']")
            picture.scroll_into_view_if_needed()
            assert picture.evaluate("img => img.complete && img.naturalWidth > 300"), "the pipeline picture did not load"
            page.screenshot(path=SCREENSHOTS / "browser_00_pipeline.png")
    page.get_by_role("tab", name="04_visualization.ipynb").click()
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    panel = notebook.locator(".widget-vbox").filter(has=page.locator("input[placeholder='a red circle']")).first
    panel.scroll_into_view_if_needed()
    query = panel.locator("input[placeholder='a red circle']")
    query.fill("a blue square")
    panel.get_by_role("button", name="Search").click()
    expect(panel.get_by_text(re.compile(r"^top \d+ for 'a blue square'$"))).to_be_visible(timeout=60_000)
    labels = card_labels(panel)
    assert [label.split()[0] for label in labels[:5]] == ["blue_square"] * 5, labels
    panel.screenshot(path=SCREENSHOTS / "browser_panel_search.png")
    chosen = panel.locator(".widget-gridbox span[title]").nth(2).get_attribute("title")  # its path, on hover
    assert chosen and Path(chosen).name.startswith("blue_square_"), chosen
    panel.get_by_role("button", name="more like this").nth(2).click()
    expect(panel.get_by_text(re.compile(rf"^top \d+ like {re.escape(Path(chosen).name)}$"))).to_be_visible(
        timeout=60_000)
    assert panel.locator(".widget-gridbox span[title]").first.get_attribute("title") == chosen
    assert not panel.locator(".jupyter-widgets-error-widget").count()  # every thumbnail rendered
    assert not panel.locator("span[style*='#b00020']").count()  # no red error line
    panel.screenshot(path=SCREENSHOTS / "browser_panel_more_like_this.png")
