"""The recipe study at CI size (`--quick`) on a tiny fixture folder, not the real data: every recipe trains and is
evaluated on the held-out split and a cross-domain folder beside copy-the-gray; results JSON, galleries, resume (a
run stopped mid-way continues, a finished one is skipped) and the `mangacolor study` command with its one-line
errors."""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from manga_colorization.core import UserError
from manga_colorization.runs import Run
from manga_colorization.experiments.study import (STUDY_RECIPES, add_commands, recipe_config, run_study, train_recipe,
                                                  trained_recipes)


def _tiny(root: Path, size: int = 40) -> Path:
    rng = np.random.default_rng(1)
    for split, k in (("train", 10), ("val", 4), ("test", 5), ("cross", 4)):
        (root / split).mkdir(parents=True)
        for i in range(k):
            img = np.repeat(np.repeat(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8), 8, 0), 8, 1)
            Image.fromarray(img).save(root / split / f"img{i}.png")
    Image.new("RGB", (size, size), (128, 128, 128)).save(root / "test" / "gray.png")     # a gray target: counted apart
    return root


def _cli(argv):
    p = argparse.ArgumentParser(prog="mangacolor"); add_commands(p.add_subparsers())
    a = p.parse_args(["study"] + argv)
    return a.func(a)


pytestmark = pytest.mark.usefixtures("own_cache")   # conftest: the image cache stays in tmp


@pytest.fixture(scope="module")
def study(tmp_path_factory, own_cache):
    tmp = tmp_path_factory.mktemp("study")
    data = _tiny(tmp / "data")
    t0 = time.perf_counter()
    rc = _cli(["--data", str(data), "--cross", str(data / "cross"), "--out", str(tmp / "out"), "--quick", "--json",
               str(tmp / "r.json")])
    return tmp, data, rc, time.perf_counter() - t0, json.loads((tmp / "r.json").read_text())


def test_quick_study_runs_every_recipe(study, capsys):
    tmp, data, rc, seconds, res = study
    assert rc == 0 and seconds < 300                                     # --quick: under 5 minutes
    assert list(res["recipes"]) == list(STUDY_RECIPES) and res["quick"] is True
    for name, r in res["recipes"].items():
        for source in ("in_domain", "cross_domain"):
            m = r[source]
            for k in ("psnr_pooled", "ssim", "ciede2000", "colorfulness_ratio"):
                assert np.isfinite(m[k]) and f"baseline_{k}" in m
        assert r["in_domain"]["images"] == 6 and r["in_domain"]["gray_targets"] == 1
        assert r["cross_domain"]["gray_targets"] == 0
        assert (tmp / "out" / "gallery" / f"{name}_cross_domain_worst.png").is_file()
    assert set(res["winners"]) == {"in_domain",
                                   "cross_domain"} and res["winners"]["in_domain"]["recipe"] in STUDY_RECIPES
    assert json.loads((tmp / "out" / "study.json").read_text())["recipes"] == res["recipes"]


def test_rerun_skips_finished_runs(study):
    tmp, data, *_ = study
    before = {n: (tmp / "out" / n / "checkpoints" / "last.pt").stat().st_mtime for n in trained_recipes(STUDY_RECIPES)}
    res = run_study(data, data / "cross", tmp / "out", quick=True, recipes=["rgb", "adv_0"], log=lambda *a: None)
    assert {r["status"] for r in res["recipes"].values()} == {"done"}
    assert all((tmp / "out" / n / "checkpoints" / "last.pt").stat().st_mtime == t for n, t in before.items())


def test_interrupted_recipe_resumes(tmp_path):
    data = _tiny(tmp_path / "data")
    config = recipe_config("lab_l1", tmp_path / "out", data, quick=True)
    from manga_colorization.train import train
    train(config.__class__(**{**config.to_dict(), "epochs": 1}))          # as if stopped after epoch 1 of 2
    assert Run(config.out).status(2) == "partial"
    assert train_recipe(config.__class__(**{**config.to_dict(), "epochs": 2})) == "resumed"
    assert Run(config.out).status(2) == "done" and [r["epoch"] for r in Run(config.out).metrics()] == [1, 2]


def test_errors_name_the_value(tmp_path):
    with pytest.raises(UserError, match="unknown recipe 'nope'"): run_study(tmp_path, recipes="rgb,nope")
    with pytest.raises(UserError, match="no test/ folder"): run_study(tmp_path, recipes="rgb")
    (tmp_path / "test").mkdir()
    with pytest.raises(UserError, match="does not exist"): run_study(tmp_path, tmp_path / "missing", recipes="rgb")
