"""manga_colorization.synthetic: determinism, looks, pages with ground truth, the ASCP writer and `mangacolor synth`."""
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from manga_colorization.core import UserError
from manga_colorization.data import SketchDataModule
from manga_colorization.synthetic import (FAMILIES, copy_gray_psnr, family_color, psnr_uint8, synth_illustration, synth_page,
                                          write_ascp)


def test_deterministic_per_seed_and_index():
    a, b = synth_illustration(3, 11, 64), synth_illustration(3, 11, 64)
    np.testing.assert_array_equal(np.asarray(a.color), np.asarray(b.color))
    np.testing.assert_array_equal(np.asarray(a.sketch), np.asarray(b.sketch))
    assert not np.array_equal(np.asarray(a.color), np.asarray(synth_illustration(3, 12, 64).color))
    assert not np.array_equal(np.asarray(a.color), np.asarray(synth_illustration(4, 11, 64).color))


@pytest.mark.parametrize("size", [16, 64, (96, 40), (40, 96)])
def test_any_size(size):
    ill = synth_illustration(0, 1, size)
    w, h = (size, size) if isinstance(size, int) else size
    assert ill.color.mode == "RGB" and ill.color.size == (w, h)
    assert ill.sketch.mode == "L" and ill.sketch.size == (w, h)
    assert ill.gray.mode == "L"


def test_looks_like_manga():
    inks, colourful = [], []
    for i in range(8):
        ill = synth_illustration(0, i, 96)
        sk = np.asarray(ill.sketch)
        inks.append((sk < 60).mean())
        assert (sk > 200).mean() > 0.5                                   # line art: mostly paper
        hsv = np.asarray(ill.color.convert("HSV"))
        colourful.append((hsv[..., 1] > 80).mean())
    assert min(inks) > 0.005 and np.mean(colourful) > 0.2               # ink lines, and colour to learn


def test_palette_families_learnable():
    for name in FAMILIES:
        grays = [Image.new("RGB", (1, 1), family_color(name, t)).convert("L").getpixel((0, 0)) for t in np.linspace(0, 1, 5)]
        assert grays == sorted(grays)                                    # within a family gray rises with the tone
    assert family_color("grass", 0.5)[1] > max(family_color("grass", 0.5)[0], family_color("grass", 0.5)[2])


def test_copy_gray_baseline():
    base = copy_gray_psnr(0, 6, 64)
    assert 12 < base < 28
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr_uint8(a, a) == float("inf") and abs(psnr_uint8(a, a + 255) - 0.0) < 1e-9


def _overlaps(b, boxes):
    return sum(not (b[2] <= x0 or b[0] >= x1 or b[3] <= y0 or b[1] >= y1) for x0, y0, x1, y1 in boxes)


def test_pages_ground_truth():
    slanted = crossing = 0
    for i in range(6):
        page = synth_page(1, i, size=(240, 340), supersample=1)
        W, H = page.color.size
        assert (W, H) == (240, 340) and page.gray.mode == "L" and len(page.panels) >= 2
        arr = np.asarray(page.color)
        assert (arr[:5] == 255).all() and (arr[-5:] == 255).all()     # white page margin
        for x0, y0, x1, y1 in page.panels:
            assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
            assert (arr[y0:y1, x0:x1] < 250).any()                      # the panel is drawn
        for poly in page.polygons:
            slanted += any(abs(a[0] - b[0]) > 1 and abs(a[1] - b[1]) > 1 for a, b in zip(poly, poly[1:] + poly[:1]))
        crossing += sum(_overlaps(b, page.panels) >= 2 for b in page.bubbles)
    assert slanted > 0 and crossing > 0
    np.testing.assert_array_equal(np.asarray(synth_page(1, 2, (240, 340)).color), np.asarray(synth_page(1, 2, (240, 340)).color))


def test_write_ascp_read_back(tmp_path):
    out = tmp_path / "ascp"
    assert write_ascp(out, 5, size=24, val_fraction=0.4, progress=False) == {"train": 3, "val": 2}
    pair = Image.open(out / "train" / "000002.png")
    assert pair.size == (48, 24)
    np.testing.assert_array_equal(np.asarray(pair)[:, :24], np.asarray(synth_illustration(0, 2, 24).color))
    dm = SketchDataModule(out, batch_size=3, resize=24, input_mode="sketch", num_workers=0, cache=False, augment=False)
    assert dm.pairs
    x, y = next(iter(dm.train_loader))
    assert x.shape == (3, 1, 24, 24) and y.shape == (3, 3, 24, 24)
    with pytest.raises(UserError, match="not empty"): write_ascp(out, 2)


def test_cli_synth(tmp_path):
    out = tmp_path / "s"
    r = subprocess.run(["mangacolor", "synth", "--out", str(out), "--n", "3", "--size", "16", "--pages", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list((out / "train").glob("*.png"))) == 2 and len(list((out / "val").glob("*.png"))) == 1
    truth = json.loads((out / "pages" / "pages.json").read_text())
    assert truth["page_000.png"]["panels"]
    r = subprocess.run(["mangacolor", "synth", "--out", str(out), "--n", "3"], capture_output=True, text=True)
    assert r.returncode == 2 and "not empty" in r.stderr


def test_write_ascp_parallel_same_files(tmp_path):
    write_ascp(tmp_path / "a", 200, size=8, workers=2, progress=False)
    write_ascp(tmp_path / "b", 200, size=8, workers=1, progress=False)
    for split in ("train", "val"):
        names = sorted(p.name for p in (tmp_path / "a" / split).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "b" / split).iterdir())
        for name in names[::37]:
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / split / name)), np.asarray(Image.open(tmp_path / "b" / split / name)))
