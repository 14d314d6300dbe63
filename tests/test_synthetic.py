"""manga_colorization.synthetic contracts: every palette family learnable, `mangacolor synth` (subprocess, exit codes), the parallel writer.
Determinism, sizes, pages and the ASCP round trip are tested in 02_synthetic."""
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from manga_colorization.synthetic import FAMILIES, family_color, write_ascp


def test_palette_families_learnable():
    for name in FAMILIES:
        grays = [Image.new("RGB", (1, 1), family_color(name, t)).convert("L").getpixel((0, 0)) for t in np.linspace(0, 1, 5)]
        assert grays == sorted(grays)                                    # within a family gray rises with the tone
    assert family_color("grass", 0.5)[1] > max(family_color("grass", 0.5)[0], family_color("grass", 0.5)[2])


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
