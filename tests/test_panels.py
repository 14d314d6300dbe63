import numpy as np
import pytest
from PIL import Image, ImageDraw

from manga_colorization.panels import box_iou, find_panels, panel_scores


def drawn_page(W=300, H=420, slanted=True):
    "Three rectangular panels and (optionally) two split by a slanted gutter; returns (page, true boxes)."
    img = Image.new("L", (W, H), 255); d = ImageDraw.Draw(img)
    m, g = 15, 10
    boxes = [(m, m, W // 2 - g // 2, H // 3), (W // 2 + g // 2, m, W - m, H // 3), (m, H // 3 + g, W - m, 2 * H // 3)]
    for b in boxes: d.rectangle((b[0], b[1], b[2] - 1, b[3] - 1), fill=150, outline=0, width=2)
    y0, y1, mid = 2 * H // 3 + g, H - m, W // 2
    if slanted:
        d.polygon([(m, y0), (mid + 15 - g // 2, y0), (mid - 15 - g // 2, y1), (m, y1)], fill=100, outline=0, width=2)
        d.polygon([(mid + 15 + g // 2, y0), (W - m, y0), (W - m, y1), (mid - 15 + g // 2, y1)], fill=100, outline=0, width=2)
        boxes += [(m, y0, mid + 15 - g // 2 + 1, y1 + 1), (mid - 15 + g // 2, y0, W - m + 1, y1 + 1)]
    return img, boxes


def test_find_panels_rectangular_and_slanted():
    page, true = drawn_page()
    found = find_panels(page)
    s = panel_scores(found, true)
    assert len(found) == 5 and s["recall"] == 1.0 and s["mean_iou"] > 0.9, (found, s)


def test_find_panels_scales_with_page_and_accepts_arrays():
    page, true = drawn_page(slanted=False)
    big = page.resize((page.width * 4, page.height * 4), Image.NEAREST)   # analysed at ~1000 px, boxes in page pixels
    s = panel_scores(find_panels(np.asarray(big)), [tuple(4 * v for v in b) for b in true])
    assert s["recall"] == 1.0 and s["mean_iou"] > 0.9, s


def test_blank_page_and_specks_have_no_panels():
    page = Image.new("L", (200, 300), 255)
    assert find_panels(page) == []
    ImageDraw.Draw(page).rectangle((10, 10, 13, 13), fill=0)   # a speck below min_area
    assert find_panels(page) == []


def test_box_iou_and_scores():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    s = panel_scores([(0, 0, 10, 10)], [(0, 0, 10, 10), (20, 20, 30, 30)])
    assert s == {"mean_iou": 0.5, "recall": 0.5, "precision": 1.0}


def test_synthetic_pages_against_true_boxes():
    synthetic = pytest.importorskip("manga_colorization.synthetic")
    scores = [panel_scores(find_panels(p.gray), p.panels) for p in (synthetic.synth_page(seed=1, index=i, size=(400, 566)) for i in range(3))]
    assert np.mean([s["mean_iou"] for s in scores]) > 0.8 and np.mean([s["recall"] for s in scores]) > 0.8, scores
