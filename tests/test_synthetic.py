"""manga_colorization.synthetic contracts: every palette family learnable, `mangacolor synth` (subprocess, exit codes),
the parallel writer. Determinism, sizes, pages and the ASCP round trip are tested in 02_synthetic."""
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

import hashlib

from manga_colorization.synthetic import (FAMILIES, character_scheme, family_color, synth_chapter, synth_character,
                                          synth_illustration, synth_page, write_ascp)


def test_palette_families_learnable():
    for name in FAMILIES:
        grays = [Image.new("RGB", (1, 1),
                           family_color(name, t)).convert("L").getpixel((0, 0)) for t in np.linspace(0, 1, 5)]
        assert grays == sorted(grays)                                    # within a family gray rises with the tone
    assert family_color("grass", 0.5)[1] > max(family_color("grass", 0.5)[0], family_color("grass", 0.5)[2])


def test_cli_synth(tmp_path):
    out = tmp_path / "s"
    r = subprocess.run(["mangacolor", "synth", "--out", str(out), "--n", "3", "--size", "16", "--pages", "1"],
                       capture_output=True, text=True)
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
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / split / name)),
                                          np.asarray(Image.open(tmp_path / "b" / split / name)))


def test_existing_pictures_unchanged_by_characters():
    "Character schemes are an addition: today's illustrations and pages are the same bytes as before them."
    h = hashlib.sha256()
    for i in range(8):
        ill = synth_illustration(0, i, 64)
        h.update(np.asarray(ill.color).tobytes()); h.update(np.asarray(ill.sketch).tobytes())
    page = synth_page(0, 1, (128, 182), supersample=1)
    h.update(np.asarray(page.color).tobytes()); h.update(np.asarray(page.sketch).tobytes())
    # pinned before synth_character existed (Pillow's rasteriser is the only other thing that changes it)
    assert h.hexdigest() == "2d25ab480360eb0ee4723c133cb33eaf979187e43f24402435199fd23f451002"


def test_same_character_pairs_are_deterministic_and_share_colours():
    a, b = synth_character(3, 1, 0, 64), synth_character(3, 1, 0, 64)
    assert np.array_equal(np.asarray(a.color), np.asarray(b.color))
    assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask))
    other = synth_character(3, 1, 1, 64)
    assert np.abs(np.asarray(a.color, np.float32) - np.asarray(other.color, np.float32)).mean() > 15  # redrawn
    hair = np.asarray(character_scheme(3, 1).hair(), np.int16)
    for d in (a, other):                                                                      # in the same hair colour
        near = np.abs(np.asarray(d.color, np.int16) - hair).max(-1) <= 12
        assert (near & (np.asarray(d.mask) > 0)).sum() > 10
    assert character_scheme(3, 1).colors() != character_scheme(3, 2).colors()


def test_chapter_pages_are_deterministic_and_differ():
    pages = synth_chapter(1, 0, pages=2, size=(96, 136), supersample=1)
    again = synth_chapter(1, 0, pages=2, size=(96, 136), supersample=1)
    assert [p.color.size for p in pages] == [(96, 136)] * 2 and pages[0].sketch.mode == "L"
    assert all(np.array_equal(np.asarray(p.color), np.asarray(q.color)) for p, q in zip(pages, again))
    assert not np.array_equal(np.asarray(pages[0].color), np.asarray(pages[1].color))
