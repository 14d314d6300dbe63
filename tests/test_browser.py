"""Real-browser test of nbs/21_results.ipynb: JupyterLab headless on localhost, Chromium driven by Playwright.

Runs all cells, changes the run dropdown of the results browser and checks that the picture in the run's output tile
changes (pixels of the tile only, read from the displayed PNG; the label band above the tiles is left out, so a new
run name alone cannot pass), moves the image slider and checks that the input tile changes, checks that no cell shows
an error, and colorizes an uploaded page. Screenshots go to test-artifacts/. As a script it writes the
README pictures of a real grid (the browser screenshot, and the notebook's compare_grid/curves/final_metrics PNGs):

    python tests/test_browser.py --grid runs/grid --out images/results_browser.png
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "nbs" / "21_results.ipynb"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S, RUN_ALL_S, CHANGE_S = 120, 300, 60


def _missing() -> str | None:
    "Why the browser test cannot run here, or None."
    if not CHROMIUM.exists(): return f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)"
    for mod in ("playwright", "jupyterlab", "ipykernel", "ipywidgets"):
        try: __import__(mod)
        except ImportError: return f"python package {mod} is not installed (pip install -e '.[dev]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@contextmanager
def jupyter_lab(root: Path, env: dict):
    ("JupyterLab on a free localhost port serving `root`, no token; yields its base URL; the whole process group is "
     "ended after.")
    settings = root.parent / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, log = _free_port(), open(root.parent / "jupyter.log", "w")  # noqa: SIM115 (closed in finally)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.workspaces_dir={root.parent / 'workspaces'}",
               f"--LabApp.user_settings_dir={root.parent / 'settings'}",
           "--ServerApp.port_retries=0", "--LabApp.extension_manager=readonly", "--LabApp.news_url=None"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}: "
                                   f"{(root.parent / 'jupyter.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer on {url} within {SERVER_START_S} s")
            time.sleep(0.5)
        yield url
    finally:
        _shutdown_kernels(url)   # kernels run in sessions of their own: end them through the server first
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try: os.killpg(proc.pid, sig)
            except ProcessLookupError: break
            try: proc.wait(timeout=wait); break
            except subprocess.TimeoutExpired: continue
        log.close()


def _shutdown_kernels(url: str):
    "Ask the server to shut down every kernel it started (bounded; errors ignored: the server may be gone)."
    try:
        with urllib.request.urlopen(f"{url}/api/kernels", timeout=5) as r: kernels = json.load(r)
        for k in kernels:
            req = urllib.request.Request(f"{url}/api/kernels/{k['id']}", method="DELETE")
            urllib.request.urlopen(req, timeout=10).close()
    except OSError: pass


JS_STATE = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.content || !nb.context) return {ready: false};
  const kernel = nb.context.sessionContext.session && nb.context.sessionContext.session.kernel;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code');
  const outputs = cells.map(c => c.model.sharedModel.toJSON().outputs || []);
  return {ready: true, path: nb.context.path, kernel: kernel ? kernel.status : 'none',
          counts: cells.map(c => c.model.executionCount),
          errors: outputs.flat().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)};
}"""


JS_KERNEL_IDLE = ("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget; "
                  "const k = w && w.context && w.context.sessionContext.session && "
                  "w.context.sessionContext.session.kernel; "
                  "return k && k.status === 'idle'; }")


def lab_env(tmp: Path, in_test: bool = True, **extra: str) -> dict:
    ("The environment of a JupyterLab living in `tmp` (its HOME and Jupyter/IPython folders), one thread, IN_TEST set "
     "or not, plus `extra`.")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_PLATFORM_DIRS")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HOME=str(tmp), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"), PYTHONUNBUFFERED="1")
    if in_test: env["IN_TEST"] = "1"
    else: env.pop("IN_TEST", None)
    env.update(extra)
    return env


@contextmanager
def lab_folder(prefix: str):
    "A fresh temporary folder and its `nbs` subfolder (the server's root to fill); yields both; removed after."
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root = tmp / "nbs"; root.mkdir()
        yield tmp, root
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_page(page, name: str):
    "A full-page screenshot `name`.png and the page's HTML `name`.html in test-artifacts/."
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    (ARTIFACTS / f"{name}.html").write_text(page.content())


@contextmanager
def lab_page(root: Path, env: dict, notebook_name: str, viewport: dict, artifact_prefix: str):
    """JupyterLab serving `root` and a headless Chromium page on `notebook_name`; yields the page.

    Old test-artifacts/`artifact_prefix`_* files are removed first; on any exception in the block (or while opening the
    notebook) the page is saved as `artifact_prefix`_failure.png and .html before the exception goes on."""
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob(f"{artifact_prefix}_*"): old.unlink()
    with jupyter_lab(root, env) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport=viewport)
            page.set_default_timeout(60_000)
            try:
                page.goto(f"{url}/lab/tree/{notebook_name}", wait_until="domcontentloaded")
                yield page
            except Exception:
                _save_page(page, f"{artifact_prefix}_failure")
                raise
        finally:
            browser.close()


def run_all_cells(page, timeout_s: float, artifact_prefix: str) -> dict:
    """Wait for the notebook's kernel to be idle, run all cells, poll JS_STATE until every cell ran; return that state.

    A cell's error raises AssertionError at once; cells not done within `timeout_s` raise TimeoutError after a full-page
    screenshot test-artifacts/`artifact_prefix`_timeout.png (`lab_page` adds the _failure files for both)."""
    page.wait_for_function(JS_KERNEL_IDLE, timeout=SERVER_START_S * 1000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline, state = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        state = page.evaluate(JS_STATE)
        if state.get("errors"): raise AssertionError(f"a cell of {state['path']} raised: {state['errors']}")
        if state.get("ready") and state["kernel"] == "idle" and state["counts"] and all(state["counts"]): return state
        time.sleep(1)
    page.screenshot(path=str(ARTIFACTS / f"{artifact_prefix}_timeout.png"), full_page=True)
    raise TimeoutError(f"cells did not finish within {timeout_s} s: {json.dumps(state)}")


JS_PIXELS = """el => {
  const c = document.createElement('canvas');
  c.width = el.naturalWidth; c.height = el.naturalHeight;
  c.getContext('2d').drawImage(el, 0, 0);
  return c.toDataURL('image/png');
}"""
HEAD, PAD = 18, 4   # gallery._labelled_strip: a label band of HEAD px above the tiles, PAD px around each tile


def _displayed(locator):
    "The pixels (H,W,3 uint8) of the PNG an <img> displays now, at its natural size, read back through a canvas."
    import base64
    import io

    import numpy as np
    from PIL import Image
    url = locator.evaluate(JS_PIXELS)
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im: return np.asarray(im.convert("RGB"))


def strip_tiles(strip):
    "The square tiles of a `gallery._labelled_strip` (input, outputs..., target), without the label band and padding."
    h = strip.shape[0] - HEAD - PAD
    n, rest = divmod(strip.shape[1] - PAD, h + PAD)
    assert h > 0 and n >= 3 and rest == 0, (f"a strip of {strip.shape[1]}x{strip.shape[0]} px is not tiles of {h} px "
                                            f"under a {HEAD} px label band")
    return [strip[HEAD:HEAD + h, PAD + i * (h + PAD):PAD + i * (h + PAD) + h] for i in range(n)]


def tile_diff(a, b) -> float:
    "Mean absolute difference of two tiles, in 0..255 levels."
    import numpy as np
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _wait_tiles(view, check, timeout_s: float):
    "Tiles of the displayed strip, polled until `check(tiles)` holds or `timeout_s` passes (then the last ones)."
    deadline = time.monotonic() + timeout_s
    while True:
        tiles = strip_tiles(_displayed(view))
        if check(tiles) or time.monotonic() > deadline: return tiles
        time.sleep(0.5)


def run_results_notebook(grid: str | None = None, screenshot: Path | None = None, in_test: bool = True) -> dict:
    "Open 21_results.ipynb in JupyterLab in Chromium, run all cells, change the run dropdown; return what was seen."
    extra = {}
    if grid: extra["MANGACOLOR_GRID"] = str(Path(grid).resolve())
    # the notebook's own pictures go beside it
    if screenshot: extra["MANGACOLOR_IMAGES"] = str(Path(screenshot).resolve().parent)
    seen: dict = {}
    with lab_folder("browser_test_") as (tmp, root):
        shutil.copy(NOTEBOOK, root / NOTEBOOK.name)   # a copy: JupyterLab may save outputs into it
        with lab_page(root, lab_env(tmp, in_test, **extra), NOTEBOOK.name, {"width": 1400, "height": 1400},
                      "results") as page:
            state = run_all_cells(page, RUN_ALL_S, "results")
            _check_browser(page, seen, state, screenshot, tmp)
    return seen


def _check_browser(page, seen: dict, state: dict, screenshot: Path | None, tmp: Path):
    ("Record errors, change the run dropdown and the image slider, compare the tiles before and after, colorize an "
     "upload, save screenshots.")
    seen["errors"] = list(state.get("errors", []))
    widget_errors = page.locator(".jp-OutputArea-output").filter(has_text="Error displaying widget").count()
    stderr = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
    seen["dom_errors"] = widget_errors + stderr.filter(has_text="Traceback").count()
    view = page.locator("img.mc-view").last
    view.wait_for(state="visible", timeout=CHANGE_S * 1000)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=view.element_handle(),
                           timeout=CHANGE_S * 1000)
    before = strip_tiles(_displayed(view))   # input | the run's output | target
    seen["view_width"] = view.evaluate("el => el.naturalWidth")
    seen["tiles"] = len(before)
    seen["output_std_before"] = float(before[1].std())
    run_select = page.locator(".mc-run select").last
    options = run_select.locator("option").all_inner_texts()
    seen["options"] = options
    current = run_select.input_value()
    # a run of another architecture AND another loss (`arch__loss` names): its outputs genuinely differ from this one's
    arch, _, loss = current.partition("__")
    seen["changed_to"] = next((o for o in options if not o.startswith(arch + "__") and not o.endswith("__" + loss)),
                              next(o for o in options if o != current))
    run_select.select_option(label=seen["changed_to"])
    after = _wait_tiles(view, lambda t: tile_diff(t[1], before[1]) > 0, CHANGE_S)
    seen["output_diff"] = tile_diff(after[1], before[1])     # the output tile's pixels only: no label text in it
    seen["run_input_diff"] = tile_diff(after[0], before[0])   # same epoch and image: the input must stay
    seen["output_std_after"] = float(after[1].std())
    seen["label_after"] = page.locator(".mc-run select").last.input_value()
    slider = page.locator(".widget-hslider").filter(has=page.locator("label.widget-label",
                                                                     has_text=re.compile(r"^\s*image\s*$"))).last
    handle = slider.locator(".noUi-handle").first
    handle.scroll_into_view_if_needed(); handle.focus(); handle.press("ArrowRight")
    moved = _wait_tiles(view, lambda t: tile_diff(t[0], after[0]) > 0, CHANGE_S)
    seen["image_after"] = slider.locator(".widget-readout").first.inner_text().strip()
    seen["input_diff"] = tile_diff(moved[0], after[0])       # another validation image: the input tile changes
    others = page.locator(".mc-others select").last   # compare with every run: one output column each
    others.select_option(label=options)
    deadline, wide = time.monotonic() + CHANGE_S, 0
    while time.monotonic() < deadline and wide <= seen["view_width"]:
        time.sleep(0.5); wide = view.evaluate("el => el.naturalWidth")
    seen["view_width_all"] = wide
    shot = ARTIFACTS / "results_browser.png"
    widget = page.locator(".jp-OutputArea-output").filter(has=page.locator("img.mc-view")).last
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(shot))
    if screenshot: shutil.copy(shot, screenshot)
    seen["screenshot"] = str(shot)
    import numpy as np
    from PIL import Image
    upload = tmp / "page.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 64), dtype=np.uint8)).save(upload)
    with page.expect_file_chooser(timeout=CHANGE_S * 1000) as chooser:
        page.locator("button.mc-upload").last.click()
    chooser.value.set_files(str(upload))
    page.locator("button.mc-colorize").last.click()
    colorized = page.locator("img.mc-page").last
    colorized.wait_for(state="visible", timeout=CHANGE_S * 1000)
    page.wait_for_function("el => el.complete && el.naturalWidth === 64 && el.naturalHeight === 96",
                           arg=colorized.element_handle(),
                           timeout=CHANGE_S * 1000)
    seen["colorized"] = True
    colorized.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "results_colorized.png"))


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_results_notebook_in_chromium():
    seen = run_results_notebook()
    assert seen["errors"] == [], f"cells raised: {seen['errors']}"
    assert seen["dom_errors"] == 0, "a cell shows a widget error or a traceback"
    assert len(seen["options"]) >= 2, seen
    assert seen["tiles"] == 3, seen
    assert seen["label_after"] == seen["changed_to"], seen
    # the tiny grid's outputs must be pictures, not flat gray, or a change of a few levels would mean nothing
    assert seen["output_std_before"] > 5 and seen["output_std_after"] > 5, ("the output tiles are nearly uniform: "
                                                                            f"{seen}")
    assert seen["output_diff"] > 2, f"the output tile did not change after choosing {seen['changed_to']}: {seen}"
    assert seen["run_input_diff"] < 0.5, f"changing the run changed the input tile: {seen}"
    assert seen["image_after"] == "1" and seen["input_diff"] > 2, ("the image slider did not change the input tile: "
                                                                   f"{seen}")
    assert seen["view_width_all"] > seen["view_width"], "choosing runs to compare did not add output columns"
    assert seen["colorized"]
    assert Path(seen["screenshot"]).stat().st_size > 5000


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Render 21_results.ipynb in Chromium and save the results browser "
                                             "screenshot.")
    ap.add_argument("--grid", default=None, help="grid folder to open (default: the notebook's, or a tiny one)")
    ap.add_argument("--out", default=str(REPO / "images" / "results_browser.png"), help="PNG to write")
    a = ap.parse_args()
    if _missing(): sys.exit(_missing())
    print(run_results_notebook(a.grid, Path(a.out), in_test=a.grid is None))
