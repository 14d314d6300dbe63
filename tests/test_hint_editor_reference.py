"""The hint editor with a reference-guided generator (nbs/16_hint_editor.ipynb, issue 22): the reference is shown beside
the page and guides the preview and `apply` (made into a canvas once, not on every preview); a hint wins where it is;
a gray reference is the CLI's one line in the status line and changes nothing; `apply_to_chapter` colorizes a folder and
a .cbz through the batch machinery (this page with its points, the colorized page as a reference for the others, outputs
never over inputs or over files that exist); a reference-only generator takes no points. Tiny untrained generators."""
import io
import zipfile
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.colorize import MAX_REFERENCES, Colorizer
from manga_colorization.core import UserError
from manga_colorization.guidance import HintPoint, Hints
from manga_colorization.hint_editor import HintEditor
from manga_colorization.models import make_generator, save_generator

META = {"size": 32, "input_mode": "gray", "out_ch": 2, "color_space": "lab"}
RED, GREEN = (220, 40, 40), (40, 170, 60)


def _reference_generator(guidance):
    torch.manual_seed(0)
    return make_generator("unet", width=8, depth=4, out_ch=2, guidance=guidance, norm="group",
                          reference_transfer=True, reference_residual=True,
                          **({"hint_spread": True, "hint_residual": True} if guidance == "reference_hints" else {}))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    "Saved tiny generators with random weights: reference + hints, reference only, hints + palette."
    root = tmp_path_factory.mktemp("editor_ref")
    for guidance in ("reference_hints", "reference"): save_generator(_reference_generator(guidance), root / guidance,
                                                                   META)
    torch.manual_seed(0)
    save_generator(make_generator("unet", width=8, depth=4, out_ch=2, guidance="both"), root / "both", META)
    return root


@pytest.fixture(scope="module")
def col(models):
    return Colorizer(models / "reference_hints", device="cpu", keep_white=False)


def _page(seed=0, size=(96, 128)) -> Image.Image:
    "A gray page with gray levels that vary (a transfer has something to match)."
    w, h = size
    yy, xx = np.indices((h, w))
    return Image.fromarray(((xx * 3 + yy * 2 + 40 * seed) % 180 + 40).astype(np.uint8))


def _picture(colour, other=(240, 220, 200), size=(48, 40)) -> Image.Image:
    img = Image.new("RGB", size, colour); img.paste(other, (0, 0, size[0] // 2, size[1])); return img


def _upload(editor, items):
    editor.upload.value = tuple({"name": name, "type": "", "size": len(data), "content": memoryview(data),
                                 "last_modified": datetime.now(UTC)} for name, data in items)


def _png_bytes(img) -> bytes:
    buf = io.BytesIO(); img.save(buf, format="PNG"); return buf.getvalue()


def test_reference_is_shown_cached_and_guides_preview_and_apply(col, tmp_path):
    page = tmp_path / "p01.png"; _page().save(page)
    ed = HintEditor(col, page, preview_size=64)
    assert ed.reference_view.layout.display == "none" and ed.clear_reference_button.disabled
    assert "no reference" in ed.status.value
    plain = np.asarray(ed.preview_image, np.float32)
    ed.set_reference(_picture(RED))
    canvas = ed.reference_canvas
    assert canvas.shape == (1, 3, 27, 32)                               # fitted in the working size, made once
    assert ed.reference_view.layout.display is None and ed.reference_view.value[:4] == b"\x89PNG"
    assert int(ed.reference_view.height) == ed.small.height == 64 and not ed.clear_reference_button.disabled
    assert "reference: 1 picture" in ed.status.value
    red = np.asarray(ed.preview_image, np.float32)
    assert np.abs(red - plain).max() > 2
    ed.add_point(40, 60, GREEN, radius=10)
    assert ed.reference_canvas is canvas                                 # previews reuse it
    full = ed.apply()
    want = col.colorize(ed.page, hints=Hints([HintPoint(40, 60, GREEN, 10)]), reference=_picture(RED))
    assert np.array_equal(np.asarray(full), np.asarray(want))
    ed.add_reference(_picture((40, 60, 200)))                            # several: tiled on one canvas
    assert ed.reference_canvas.shape == (1, 3, 32, 64) and len(ed.references) == 2
    assert "reference: 2 pictures" in ed.status.value
    assert int(ed.reference_view.width) == 128 and int(ed.reference_view.height) < 64     # at most twice the preview
    ed.clear_reference_button.click()
    assert ed.reference_canvas is None and ed.references == [] and ed.reference_view.layout.display == "none"
    with pytest.raises(UserError, match=f"at most {MAX_REFERENCES}"): ed.set_reference([_picture(RED)] * 9)


def test_a_hint_wins_where_it_is(col):
    ed = HintEditor(col, _page(), reference=_picture((40, 60, 200)), preview_size=96)
    ed.add_point(48, 64, RED, radius=12)
    s = ed.scale[0]
    patch = np.asarray(ed.preview_image, np.float32)[round(64 * s) - 2:round(64 * s) + 3,
                                                     round(48 * s) - 2:round(48 * s) + 3]
    assert (patch[..., 0] - patch[..., 2]).mean() > 20                     # red, not the blue reference


def test_gray_reference_is_one_line_and_changes_nothing(col, tmp_path):
    gray = Image.new("RGB", (30, 30), (120, 120, 120)); gray.save(tmp_path / "gray.png")
    ed = HintEditor(col, _page(), reference=tmp_path / "gray.png")        # opens, says why there is no reference
    assert "reference" in ed.status.value and "is gray: it has no colour to give" in ed.status.value
    assert ed.reference_canvas is None and "<br>" not in ed.status.value
    ed.set_reference(_picture(RED)); before = ed.reference_canvas
    with pytest.raises(UserError, match="is gray: it has no colour to give"): ed.set_reference(gray)
    assert ed.reference_canvas is before
    _upload(ed, [("gray.png", _png_bytes(gray))])
    assert "reference gray.png is gray: it has no colour to give" in ed.status.value
    assert ed.reference_canvas is before and len(ed.references) == 1
    _upload(ed, [("notes.txt", b"abc")])
    assert "could not use notes.txt" in ed.status.value and ed.reference_canvas is before
    ed.add_point(10, 10, RED)                                              # still working
    assert "1 point, reference: 1 picture" in ed.status.value
    _upload(ed, [("a.png", _png_bytes(_picture(RED))), ("b.png", _png_bytes(_picture(GREEN)))])
    assert ed.upload.multiple and len(ed.references) == 2 and ed.reference_canvas.shape[-1] == 64


def _chapter(folder, n=3):
    folder.mkdir(parents=True)
    for i in range(n): _page(i).save(folder / f"{i + 1:03d}.png")
    return folder


def test_apply_to_chapter_folder_cbz_and_memory(col, tmp_path):
    chapter = _chapter(tmp_path / "ch01")
    ed = HintEditor(col, chapter / "001.png", reference=_picture(RED), radius=10)
    ed.add_point(40, 60, GREEN)
    out = tmp_path / "out"
    (out / "ch01").mkdir(parents=True); (out / "ch01" / "003.png").write_bytes(b"mine")   # exists: skipped
    res = ed.apply_to_chapter(chapter, out, page_as_reference=True, progress=False)
    assert (res.total, res.colorized, res.skipped, res.failed) == (3, 2, 1, 0)
    assert (out / "ch01" / "003.png").read_bytes() == b"mine"
    assert "chapter: 3 page(s): 2 colorized" in ed.status.value
    assert [j.dst.name for j in ed.chapter_jobs] == ["001.png", "002.png", "003.png"]
    mine = np.asarray(Image.open(out / "ch01" / "001.png").convert("RGB"))
    assert np.array_equal(mine, np.asarray(ed._render()))                 # this page with its point
    second = col.colorize(chapter / "002.png", reference=[_picture(RED), ed._render()])
    assert np.abs(np.asarray(Image.open(out / "ch01" / "002.png").convert("RGB"), np.float32)
                  - np.asarray(second, np.float32)).max() <= 1
    again = ed.apply_to_chapter(chapter, out, progress=False)             # nothing is redone without overwrite
    assert again.skipped == 3 and again.colorized == 0
    with zipfile.ZipFile(tmp_path / "ch02.cbz", "w") as z:
        for i in range(2): z.writestr(f"{i:03d}.png", _png_bytes(_page(i)))
    res = ed.apply_to_chapter(tmp_path / "ch02.cbz", out, page_as_reference=True, progress=False)
    assert res.colorized == 2 and zipfile.ZipFile(out / "ch02.cbz").namelist() == ["000.png", "001.png"]
    res = ed.apply_to_chapter([_page(1), np.asarray(_page(2))], tmp_path / "mem", progress=False)
    assert res.colorized == 2 and sorted(p.name for p in (tmp_path / "mem").iterdir()) == ["page_001.png",
                                                                                          "page_002.png"]
    with pytest.raises(UserError, match="never written over inputs"): ed.apply_to_chapter(chapter, chapter.parent)
    with pytest.raises(UserError, match="would overwrite the input"):
        ed.apply_to_chapter([chapter / "002.png"], chapter)
    assert sorted(p.name for p in chapter.iterdir()) == ["001.png", "002.png", "003.png"]


def test_chapter_button_says_problems_in_the_status_line(col, tmp_path):
    chapter = _chapter(tmp_path / "ch", 2)
    ed = HintEditor(col, chapter / "001.png", reference=_picture(RED))
    ed.chapter_button.click()
    assert "type the chapter's folder" in ed.status.value
    ed.chapter_path.value = str(tmp_path / "missing")
    ed.chapter_button.click()
    assert "missing not found" in ed.status.value and "<br>" not in ed.status.value
    ed.chapter_path.value = str(chapter)                                  # default out: colorized/ beside the page
    assert ed.chapter_use_page.value
    ed.chapter_button.click()
    assert "2 colorized" in ed.status.value and (chapter / "colorized" / "ch" / "002.png").is_file()
    ed.apply()                                                            # ch/001.colorized.png: not a chapter page
    ed.chapter_out.value = str(tmp_path / "o2")
    ed.chapter_button.click()
    assert sorted(p.name for p in (tmp_path / "o2" / "ch").iterdir()) == ["001.png", "002.png"]
    blank = HintEditor(col, Image.new("L", (64, 64), 255), reference=_picture(RED))   # paper stays white: gray
    with pytest.raises(UserError, match="page, colorized, is gray: it has no colour to give the other pages"):
        blank.apply_to_chapter(chapter, tmp_path / "o3", page_as_reference=True)
    blank.chapter_path.value, blank.chapter_out.value = str(chapter), ""
    blank.chapter_button.click()
    assert "give an output folder" in blank.status.value
    blank.chapter_out.value = str(tmp_path / "o3")
    blank.chapter_button.click()
    assert "is gray: it has no colour to give" in blank.status.value and not (tmp_path / "o3").exists()


def test_reference_only_generator_takes_no_points(models):
    ed = HintEditor(Colorizer(models / "reference", device="cpu"), _page(), reference=_picture(RED))
    assert ed.color.disabled and ed.save_button.disabled and ed.reference_canvas is not None
    with pytest.raises(UserError, match="takes no hints"): ed.add_point(5, 5)
    ed._on_pointer({"type": "mousedown", "button": 0, "dataX": 10, "dataY": 10})
    assert "takes no hints" in ed.status.value and ed.points == []


def test_palette_generator_shows_its_picture_and_takes_one(models, tmp_path):
    ed = HintEditor(Colorizer(models / "both", device="cpu"), _page(), reference=_picture(RED))
    assert ed.palette is not None and ed.use_palette.value and ed.reference_canvas is None
    assert ed.reference_view.layout.display is None and not ed.upload.multiple
    with pytest.raises(UserError, match="takes one palette picture"): ed.add_reference(_picture(GREEN))
    res = ed.apply_to_chapter([_page(1)], tmp_path / "o", page_as_reference=True, progress=False)
    want = ed.colorizer.colorize(_page(1), palette=ed._render())                  # this page's palette
    got = np.asarray(Image.open(tmp_path / "o" / "page_001.png").convert("RGB"), np.float32)
    assert res.colorized == 1 and np.abs(got - np.asarray(want, np.float32)).max() <= 1
    ed.set_reference(None)
    assert ed.palette is None and ed.reference_view.layout.display == "none" and ed.clear_reference_button.disabled
