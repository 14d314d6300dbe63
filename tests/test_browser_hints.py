"""Real-browser test of the hint editor (nbs/16_hint_editor.ipynb): JupyterLab headless on localhost, Chromium driven by
Playwright.

Writes a small notebook into a temporary folder beside a flat gray page and the tiny guided generator, runs all cells,
then in the page: picks a colour in the editor's colour picker, clicks the displayed page at a known spot, waits for the
preview, and checks that the preview's pixels around the click (outside the disc drawn for the point) moved toward that
colour; then clicks "save hints" and reads the sidecar: one point near the clicked page position, in that colour.
Screenshots go to test-artifacts/. The JupyterLab helpers come from tests/test_browser.py."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from test_browser import (
    ARTIFACTS,
    _displayed,
    _missing,
    lab_env,
    lab_folder,
    lab_page,
    run_all_cells,
)

RUN_ALL_S, CHANGE_S = 180, 60
PAGE_SIZE = (240, 336)                  # the page, px; shown at 256 px on its longer side
PICKED, START = "#dc2828", "#3050d0"    # the colour the test picks in the browser, and the picker's colour before
CLICK = (90, 110)                       # where the test clicks, in pixels of the displayed preview
DROP = (90, 190)                        # where it then drags the point to


def _skip_reason() -> str | None:
    if _missing(): return _missing()
    try: __import__("ipyevents")
    except ImportError: return "python package ipyevents is not installed (pip install -e .)"
    return None


def _write_folder(root: Path):
    "The page, the tiny guided generator and a notebook that shows a HintEditor on the page."
    import nbformat
    from PIL import Image

    from manga_colorization.train import save_demo_generator
    Image.new("L", PAGE_SIZE, 150).save(root / "page.png")
    save_demo_generator(root / "guided", steps=150)
    cells = ["from manga_colorization.colorize import Colorizer\nfrom manga_colorization.hint_editor import HintEditor",
             ("ed = HintEditor(Colorizer('guided', device='cpu', keep_white=False), 'page.png', radius=24)\n"
             f"ed.color.value = {START!r}\ned")]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "hints.ipynb")


def _ring(img: np.ndarray, cx: float, cy: float, inner: float = 9, outer: float = 16) -> np.ndarray:
    "The pixels (N, 3) of `img` between `inner` and `outer` px from (cx, cy): around the point, outside its drawn disc."
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    d = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy)
    return img[(d >= inner) & (d <= outer)].astype(np.float32)


def _status(page) -> str: return page.locator(".mc-status").last.inner_text()


def _wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline: raise TimeoutError(f"{what}: not within {timeout_s} s")
        time.sleep(0.25)
    return result


def _check_editor(page, root: Path, seen: dict):
    "Pick a colour, click the page, compare the preview around the click before and after, save the hints."
    view = page.locator("img.mc-hint-view").last
    view.wait_for(state="visible", timeout=CHANGE_S * 1000)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=view.element_handle(),
                           timeout=CHANGE_S * 1000)
    _wait(lambda: "0 points" in _status(page), CHANGE_S, "the editor's first preview")
    nat = view.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    box = view.bounding_box()
    seen.update(natural=nat, shown=(round(box["width"]), round(box["height"])))
    before = _displayed(view)
    picker = page.locator(".mc-color input[type=color]").last
    picker.fill(PICKED)
    text = page.locator(".mc-color input[type=text]").last
    _wait(lambda: text.input_value().lower() == PICKED, CHANGE_S, "the picked colour in the picker's text")
    page.wait_for_timeout(500)                              # the picker's change travels to the kernel
    view.scroll_into_view_if_needed()
    view.click(position={"x": CLICK[0] * box["width"] / nat[0], "y": CLICK[1] * box["height"] / nat[1]})
    _wait(lambda: re.search(r"\b1 point\b", _status(page)), CHANGE_S, "the preview after the click")
    seen["status"] = _status(page)
    seen["preview_ms"] = float(re.search(r"preview (\d+) ms", seen["status"]).group(1))
    after = _displayed(view)
    target = np.array([int(PICKED[i:i + 2], 16) for i in (1, 3, 5)], np.float32)
    ring_before, ring_after = _ring(before, *CLICK), _ring(after, *CLICK)
    # mean L1 distance to the picked colour, 0..765
    seen["dist_before"] = float(np.abs(ring_before - target).sum(1).mean())
    seen["dist_after"] = float(np.abs(ring_after - target).sum(1).mean())
    # a far corner
    seen["far_change"] = float(np.abs(after[-30:, -30:].astype(np.float32) - before[-30:, -30:]).mean())
    page.locator(".jp-OutputArea-output").filter(has=page.locator("img.mc-hint-view")).last.screenshot(
        path=str(ARTIFACTS / "hints_editor.png"))
    page.locator("button.mc-save-hints").last.click()
    sidecar = root / "page.hints.json"
    _wait(lambda: sidecar.is_file(), CHANGE_S, f"{sidecar} after 'save hints'")
    seen["sidecar"] = json.loads(sidecar.read_text())
    seen["saved_status"] = _wait(lambda: "saved" in (st := _status(page)) and st, CHANGE_S, "the app's word on saving")
    seen["expected_xy"] = (CLICK[0] * PAGE_SIZE[0] / nat[0], CLICK[1] * PAGE_SIZE[1] / nat[1])
    _drag_and_remove(page, view, before, seen)


def _drag_and_remove(page, view, before: np.ndarray, seen: dict):
    "Drag the point down the page (the colour follows it), then right-click it (gone: the first preview is back)."
    box, target = view.bounding_box(), np.array([int(PICKED[i:i + 2], 16) for i in (1, 3, 5)], np.float32)
    at = lambda p: (box["x"] + p[0] * box["width"] / seen["natural"][0],
                    box["y"] + p[1] * box["height"] / seen["natural"][1])
    near = lambda img, p: float(np.abs(_ring(img, *p) - target).sum(1).mean())
    page.mouse.move(*at(CLICK)); page.mouse.down()
    page.mouse.move(*at(DROP), steps=8); page.mouse.up()
    dragged = _wait(lambda: [img for img in [_displayed(view)] if near(img, DROP) < seen["dist_before"] - 60],
                    CHANGE_S, "the preview after dragging the point")[0]
    seen["drag_dist_drop"], seen["drag_dist_click"] = near(dragged, DROP), near(dragged, CLICK)
    page.mouse.click(*at(DROP), button="right")
    _wait(lambda: re.search(r"\b0 points\b", _status(page)), CHANGE_S, "the preview after right-clicking the point")
    seen["removed_equal"] = bool(np.array_equal(_displayed(view), before))


def run_hint_editor() -> dict:
    "Open the written notebook in JupyterLab in Chromium, run it, use the editor; return what was seen."
    seen: dict = {}
    with lab_folder("browser_hints_") as (tmp, root):
        _write_folder(root)
        with lab_page(root, lab_env(tmp), "hints.ipynb", {"width": 1400, "height": 1100}, "hints") as page:
            run_all_cells(page, RUN_ALL_S, "hints")
            _check_editor(page, root, seen)
    return seen


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_hint_editor_in_chromium():
    seen = run_hint_editor()
    assert seen["natural"] == [183, 256], seen                       # the preview is 256 px on the page's longer side
    # the pixels around the click, outside the drawn disc, came much closer to the picked colour; a far corner did not
    # change
    assert seen["dist_after"] < seen["dist_before"] - 60, seen
    assert seen["far_change"] < 2, seen
    points = seen["sidecar"]["points"]
    assert len(points) == 1, seen["sidecar"]
    (ex, ey), p = seen["expected_xy"], points[0]
    assert abs(p["x"] - ex) <= 2 and abs(p["y"] - ey) <= 2, (p, seen["expected_xy"])
    assert p["color"] == PICKED and p["radius"] == 24, p
    assert "saved 1 point to" in seen["saved_status"], seen["saved_status"]
    assert (ARTIFACTS / "hints_editor.png").stat().st_size > 2000
    # dragging moved the colour with the point (and away from where it was); a right-click removed it
    assert seen["drag_dist_click"] > seen["drag_dist_drop"] + 60, seen
    assert seen["removed_equal"], "after removing the only point the preview is not the first one again"
