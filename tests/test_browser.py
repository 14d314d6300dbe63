"""Real-browser test of nbs/21_results.ipynb: JupyterLab headless on localhost, Chromium driven by Playwright.

Runs all cells, changes the run dropdown of the results browser, checks that the displayed image changes and that
no cell shows an error, and colorizes an uploaded page. Screenshots go to test-artifacts/. As a script it writes the
README pictures of a real grid (the browser screenshot, and the notebook's compare_grid/curves/final_metrics PNGs):

    python tests/test_browser.py --grid runs/grid --out images/results_browser.png
"""
from __future__ import annotations

import argparse
import json
import os
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
    "JupyterLab on a free localhost port serving `root`, no token; yields its base URL; the whole process group is ended after."
    settings = root.parent / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, log = _free_port(), open(root.parent / "jupyter.log", "w")  # noqa: SIM115 (closed in finally)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.workspaces_dir={root.parent / 'workspaces'}", f"--LabApp.user_settings_dir={root.parent / 'settings'}",
           "--ServerApp.port_retries=0", "--LabApp.extension_manager=readonly", "--LabApp.news_url=None"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited with {proc.returncode}: {(root.parent / 'jupyter.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.monotonic() > deadline: raise TimeoutError(f"jupyter lab did not answer on {url} within {SERVER_START_S} s")
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
  return {ready: true, kernel: kernel ? kernel.status : 'none',
          counts: cells.map(c => c.model.executionCount),
          errors: outputs.flat().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)};
}"""


def _element_png(locator) -> bytes:
    locator.scroll_into_view_if_needed(timeout=10_000)
    return locator.screenshot(timeout=10_000, animations="disabled")


def run_results_notebook(grid: str | None = None, screenshot: Path | None = None, in_test: bool = True) -> dict:
    "Open 21_results.ipynb in JupyterLab in Chromium, run all cells, change the run dropdown; return what was seen."
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("results_*"): old.unlink()
    tmp = Path(tempfile.mkdtemp(prefix="browser_test_"))
    root = tmp / "nbs"; root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)   # a copy: JupyterLab may save outputs into it
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_PLATFORM_DIRS")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HOME=str(tmp), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"), PYTHONUNBUFFERED="1")
    if in_test: env["IN_TEST"] = "1"
    else: env.pop("IN_TEST", None)
    if grid: env["MANGACOLOR_GRID"] = str(Path(grid).resolve())
    if screenshot: env["MANGACOLOR_IMAGES"] = str(Path(screenshot).resolve().parent)   # the notebook's own pictures go beside it
    seen = {}
    try:
        with jupyter_lab(root, env) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                page.set_default_timeout(60_000)
                page.goto(f"{url}/lab/tree/{NOTEBOOK.name}", wait_until="domcontentloaded")
                page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                                       "window.jupyterapp.shell.currentWidget.context && "
                                       "window.jupyterapp.shell.currentWidget.context.sessionContext.session && "
                                       "window.jupyterapp.shell.currentWidget.context.sessionContext.session.kernel && "
                                       "window.jupyterapp.shell.currentWidget.context.sessionContext.session.kernel.status === 'idle'",
                                       timeout=SERVER_START_S * 1000)
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                deadline, state = time.monotonic() + RUN_ALL_S, {}
                while time.monotonic() < deadline:
                    state = page.evaluate(JS_STATE)
                    if state.get("errors"): break
                    if state.get("ready") and state["kernel"] == "idle" and state["counts"] and all(state["counts"]): break
                    time.sleep(1)
                else:
                    page.screenshot(path=str(ARTIFACTS / "results_timeout.png"), full_page=True)
                    raise TimeoutError(f"cells did not finish within {RUN_ALL_S} s: {json.dumps(state)}")
                if state.get("errors"):
                    page.screenshot(path=str(ARTIFACTS / "results_failure.png"), full_page=True)
                    raise AssertionError(f"a cell of {NOTEBOOK.name} raised: {state['errors']}")
                try: _check_browser(page, seen, state, screenshot, tmp)
                except Exception:
                    page.screenshot(path=str(ARTIFACTS / "results_failure.png"), full_page=True)
                    (ARTIFACTS / "results_failure.html").write_text(page.content())
                    raise
            finally:
                browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return seen


def _check_browser(page, seen: dict, state: dict, screenshot: Path | None, tmp: Path):
    "Record errors, change the run dropdown, compare the view before and after, colorize an upload, save screenshots."
    seen["errors"] = list(state.get("errors", []))
    seen["dom_errors"] = page.locator(".jp-OutputArea-output").filter(
        has_text="Error displaying widget").count() + page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text="Traceback").count()
    view = page.locator("img.mc-view").last
    view.wait_for(state="visible", timeout=CHANGE_S * 1000)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=view.element_handle(), timeout=CHANGE_S * 1000)
    before = _element_png(view)
    seen["view_width"] = view.evaluate("el => el.naturalWidth")
    run_select = page.locator(".mc-run select").last
    options = run_select.locator("option").all_inner_texts()
    seen["options"] = options
    current = run_select.input_value()
    seen["changed_to"] = next(o for o in options if o != current)
    run_select.select_option(label=seen["changed_to"])
    deadline, after = time.monotonic() + CHANGE_S, before
    while time.monotonic() < deadline and after == before:
        time.sleep(0.5); after = _element_png(view)
    seen["image_changed"] = after != before
    seen["label_after"] = page.locator(".mc-run select").last.input_value()
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
    page.wait_for_function("el => el.complete && el.naturalWidth === 64 && el.naturalHeight === 96", arg=colorized.element_handle(),
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
    assert seen["label_after"] != "" and seen["image_changed"], f"the view did not change after choosing {seen['changed_to']}"
    assert seen["view_width_all"] > seen["view_width"], "choosing runs to compare did not add output columns"
    assert seen["colorized"]
    assert Path(seen["screenshot"]).stat().st_size > 5000


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Render 21_results.ipynb in Chromium and save the results browser screenshot.")
    ap.add_argument("--grid", default=None, help="grid folder to open (default: the notebook's, or a tiny one)")
    ap.add_argument("--out", default=str(REPO / "images" / "results_browser.png"), help="PNG to write")
    a = ap.parse_args()
    if _missing(): sys.exit(_missing())
    print(run_results_notebook(a.grid, Path(a.out), in_test=a.grid is None))
