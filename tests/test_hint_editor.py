"""The hint editor's API (nbs/16_hint_editor.ipynb) with the tiny guided generator on a flat gray page: a red point
makes the preview red around it, moving it moves the red, removing it restores the preview, the sidecar round-trips,
apply writes a full-size page under a free name; an unguided generator, a bad sidecar and bad values are one clear
UserError."""
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.colorize import Colorizer
from manga_colorization.core import UserError, rgb_to_lab
from manga_colorization.guidance import HintPoint, Hints, read_hints, write_hints
from manga_colorization.hint_editor import HintEditor
from manga_colorization.train import save_demo_generator
from manga_colorization.models import make_generator

RED = (220, 40, 40)


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory):
    ("The tiny guided generator, fitted for 150 steps (about 10 s on one core: enough for the effects below), once for "
     "this file.")
    return Colorizer(save_demo_generator(tmp_path_factory.mktemp("guided") / "g", steps=150), device="cpu",
                     keep_white=False)


@pytest.fixture
def flat():
    return Image.new("L", (240, 336), 150)


def redness(img, x, y, r=10) -> float:
    "Mean Lab a (red-green axis) of `img` in a square of side 2r around (x, y)."
    box = np.asarray(img.convert("RGB").crop((round(x) - r, round(y) - r, round(x) + r, round(y) + r)),
                     np.float32) / 255
    return float(rgb_to_lab(torch.from_numpy(box).permute(2, 0, 1))[1].mean())


def test_point_makes_preview_red_moves_and_goes(colorizer, flat):
    ed = HintEditor(colorizer, flat, preview_size=128, radius=30)
    s = ed.scale[0]
    assert ed.small.size == (91, 128) and ed.view.value[:4] == b"\x89PNG"
    plain = np.asarray(ed.preview_image).copy()
    ed.add_point(120, 90, "#dc2828")
    top, bottom = redness(ed.preview_image, 120 * s, 90 * s), redness(ed.preview_image, 120 * s, 260 * s)
    assert top > redness(Image.fromarray(plain), 120 * s, 90 * s) + 10 and top > bottom + 10, (top, bottom)
    ed.move_point(0, 120, 260)
    assert redness(ed.preview_image, 120 * s, 260 * s) > bottom + 10
    assert redness(ed.preview_image, 120 * s, 90 * s) < top - 10
    assert (ed.points[0].x, ed.points[0].y, ed.points[0].color) == (120, 260, RED)
    assert ed.remove_point(0).color == RED and ed.points == []
    assert np.array_equal(np.asarray(ed.preview_image), plain)
    assert 0 < ed.last_preview_s < 1.0


def test_point_at_clamps_and_bad_values(colorizer, flat):
    ed = HintEditor(colorizer, flat)
    ed.add_point(50, 60, (0, 0, 255), radius=8); ed.add_point(-20, 999)          # outside: clamped to the page
    assert [(p.x, p.y) for p in ed.points] == [(50, 60), (0, 335.99)]
    # the picker's colour, the slider's radius
    assert ed.points[1].color == RED and ed.points[1].radius == ed.radius.value
    assert ed.point_at(52, 61) == 0 and ed.point_at(100, 100) is None and ed.point_at(1, 334) == 1
    with pytest.raises(UserError, match="point 5: there are 2 points"): ed.move_point(5, 1, 1)
    with pytest.raises(UserError, match="'rouge' is not a colour"): ed.add_point(1, 1, "rouge")
    with pytest.raises(UserError, match="radius"): ed.add_point(1, 1, radius=0)
    assert len(ed.points) == 2
    ed.color.value = "blue"                                                      # a CSS name, as the picker may hold
    ed.add_point(3, 3); assert ed.points[-1].color == (0, 0, 255)
    ed.clear(); assert ed.points == [] and not ed.hints


def test_pointer_events_add_drag_and_remove(colorizer, flat):
    ed = HintEditor(colorizer, flat, preview_size=128)
    sx = ed.scale[0]
    ed._on_pointer({"type": "mousedown", "button": 0, "dataX": 40, "dataY": 50})
    ed._on_pointer({"type": "mouseup", "button": 0, "dataX": 40, "dataY": 50})
    assert len(ed.points) == 1
    assert abs(ed.points[0].x - 40 / sx) < 0.01 and abs(ed.points[0].y - 50 / ed.scale[1]) < 0.01
    ed._on_pointer({"type": "mousedown", "button": 0, "dataX": 41, "dataY": 51})  # on the disc: grabs it, no new point
    ed._on_pointer({"type": "mousemove", "buttons": 1, "dataX": 60, "dataY": 90})
    # a move sent while the next PNG loads reads dataX = dataY = 0 (seen in Chromium): the relative position is used
    # instead
    ed._on_pointer({"type": "mousemove", "buttons": 1, "dataX": 0, "dataY": 0, "relativeX": 70, "relativeY": 80,
                    "boundingRectWidth": ed.small.width, "boundingRectHeight": ed.small.height})
    assert abs(ed.points[0].x - 70 / sx) < 0.01
    ed._on_pointer({"type": "mouseup", "button": 0, "dataX": 60, "dataY": 90})
    assert len(ed.points) == 1 and abs(ed.points[0].x - 60 / sx) < 0.01
    # no dataX: the position relative to the element, scaled by its drawn size (here drawn at twice the PNG's size)
    ed._on_pointer({"type": "mousedown", "button": 0, "relativeX": 20, "relativeY": 20,
                    "boundingRectWidth": 2 * ed.small.width, "boundingRectHeight": 2 * ed.small.height})
    ed._on_pointer({"type": "mouseup", "button": 0, "relativeX": 20, "relativeY": 20})
    assert abs(ed.points[1].x - 10 / sx) < 0.01
    ed._on_pointer({"type": "mousedown", "button": 2, "dataX": 60, "dataY": 90})  # right button: no new point
    ed._on_pointer({"type": "contextmenu", "button": 2, "dataX": 60, "dataY": 90})
    assert len(ed.points) == 1 and abs(ed.points[0].x - 10 / sx) < 0.01


def test_sidecar_round_trip_and_apply(colorizer, flat, tmp_path):
    page = tmp_path / "p 01.png"; flat.save(page)
    ref = Image.new("RGB", (64, 64), (40, 160, 60)); ref.paste((230, 200, 40), (0, 0, 64, 20))
    ed = HintEditor(colorizer, page, reference=ref, radius=20)
    assert ed.use_palette.value and len(ed.palette_colors()[0]) >= 2
    ed.add_point(100, 150, RED)
    assert ed.save() == tmp_path / "p 01.hints.json"
    data = json.loads((tmp_path / "p 01.hints.json").read_text())
    assert data["points"] == [{"x": 100.0, "y": 150.0, "color": "#dc2828",
                               "radius": 20.0}] and len(data["palette"]) >= 2
    again = HintEditor(colorizer, page)                                         # reads the sidecar on open
    assert again.hints.points == ed.hints.points and again.use_palette.value
    np.testing.assert_allclose(again.palette_colors()[0], ed.palette_colors()[0], atol=1.5)
    again.use_palette.value = False
    assert again.save() and "palette" not in json.loads((tmp_path / "p 01.hints.json").read_text())
    (tmp_path / "p 01.colorized.png").write_bytes(b"mine")                       # not to be overwritten
    full = again.apply()
    assert full.size == (240, 336) and full.mode == "RGB"
    assert again.result_path == tmp_path / "p 01.colorized_1.png" and Image.open(again.result_path).size == (240, 336)
    assert (tmp_path / "p 01.colorized.png").read_bytes() == b"mine" and page.stat().st_size > 0
    assert redness(full, 100, 150) > redness(full, 100, 300) + 5


def test_in_memory_page_save_to_and_given_hints(colorizer, flat, tmp_path):
    ed = HintEditor(colorizer, flat, hints=[HintPoint(10, 20, (0, 200, 0), 5)])
    assert [(p.x, p.y, p.color) for p in ed.points] == [(10, 20, (0, 200, 0))]
    with pytest.raises(UserError, match="save_to"): ed.save()
    assert ed.apply().size == (240, 336) and ed.result_path is None
    kept = HintEditor(colorizer, flat, hints={"points": [{"x": 5, "y": 6, "color": "#123456"}]},
                      save_to=tmp_path / "out")
    assert kept.save() == tmp_path / "out" / "page.hints.json"
    assert read_hints(tmp_path / "out" / "page.hints.json").points[0].color == (0x12, 0x34, 0x56)
    assert kept.apply() and kept.result_path == tmp_path / "out" / "page.colorized.png"


def test_unguided_generator_and_bad_sidecar(colorizer, flat, tmp_path):
    unguided = Colorizer(make_generator("unet", width=8, depth=4), {"size": 64, "input_mode": "gray"}, device="cpu")
    with pytest.raises(UserError, match="trained without hints"): HintEditor(unguided, flat)
    page = tmp_path / "p2.png"; flat.save(page)
    (tmp_path / "p2.hints.json").write_text('{"points": [{"x": 1, "y": 2, "color": "rouge"}]}')
    with pytest.raises(UserError, match=r"p2\.hints\.json: points\[0\]\.color"): HintEditor(colorizer, page)
    (tmp_path / "p2.hints.json").write_text("{not json")
    with pytest.raises(UserError, match=r"p2\.hints\.json: not valid JSON"): HintEditor(colorizer, page)
    write_hints(Hints([HintPoint(3, 4, RED)]), tmp_path / "p2.hints.json")
    assert HintEditor(colorizer, page).points[0].color == RED
    with pytest.raises(UserError, match="no such file"): HintEditor(colorizer, tmp_path / "missing.png")


def _upload(editor, name, content):
    editor.upload.value = ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                            "last_modified": datetime.now(UTC)},)


def test_bad_reference_upload_is_a_message(colorizer, flat):
    ed = HintEditor(colorizer, flat)
    _upload(ed, "notes.txt", b"abc")
    assert "could not use notes.txt" in ed.status.value and ed.palette is None and ed.use_palette.disabled
    buf = io.BytesIO(); Image.new("RGB", (16, 16), (40, 160, 60)).save(buf, format="PNG")
    _upload(ed, "ref.png", buf.getvalue())
    assert ed.palette is not None and ed.use_palette.value and "mc-swatches" in ed.palette_view.value
    ed.set_reference(None)
    assert ed.palette is None and not ed.use_palette.value and ed.hints.palette == []
