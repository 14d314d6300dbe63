"""The guided-colorization study at CI size (`--quick`) on a tiny fixture folder: the four runs train, every model is
measured on the synthetic validation images and the held-out real split with 0-50 hints and with the palette, beside
copy-the-gray; the targets are judged from the numbers; a rerun skips finished runs; bad data folders are one line."""
import argparse
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from manga_colorization.experiments.guided_study import GUIDED_RUNS, HINT_COUNTS, add_commands, curve_table


def _tiny(root: Path, size: int = 40) -> Path:
    rng = np.random.default_rng(2)
    for split, k in (("train", 10), ("val", 4), ("test", 5)):
        (root / split).mkdir(parents=True)
        for i in range(k):
            img = np.repeat(np.repeat(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8), 8, 0), 8, 1)
            Image.fromarray(img).save(root / split / f"img{i}.png")
    return root


def _cli(argv):
    p = argparse.ArgumentParser(prog="mangacolor"); add_commands(p.add_subparsers())
    a = p.parse_args(["guided-study"] + [str(x) for x in argv])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = a.func(a)
    return rc, out.getvalue()


pytestmark = pytest.mark.usefixtures("own_cache")   # conftest: the image cache stays in tmp


@pytest.fixture(scope="module")
def study(tmp_path_factory, own_cache):
    tmp = tmp_path_factory.mktemp("guided")
    data = _tiny(tmp / "data")
    rc, out = _cli(["--data", data, "--out", tmp / "out", "--quick", "--json", tmp / "r.json"])
    return tmp, data, rc, out, json.loads((tmp / "r.json").read_text())


def test_quick_study_measures_every_model_on_every_source(study):
    tmp, data, rc, out, summary = study
    assert rc == 0 and set(summary["runs"]) == set(GUIDED_RUNS)
    assert all(r["status"] == "trained" for r in summary["runs"].values())
    assert set(summary["curves"]) == {"synthetic_val", "real_test", "real_val"}
    for source, models in summary["curves"].items():
        guided = models["real_guided"]
        assert [(r["hints"], r["palette"]) for r in guided] == [(n,
                                                                 False) for n in HINT_COUNTS] + [(0, True), (10, True)]
        assert [(r["hints"], r["palette"]) for r in models["real_hints"]] == [(n, False) for n in HINT_COUNTS]
        assert [(r["hints"], r["palette"]) for r in models["real_unguided"]] == [(0, False)]
        # the hints spread over the gray, no network
        spread = models["spread_only"]
        assert [(r["hints"], r["palette"]) for r in spread] == [(n, False) for n in HINT_COUNTS]
        # no hints: exactly copy-the-gray
        assert abs(spread[0]["psnr_pooled"] - spread[0]["baseline_psnr_pooled"]) < 1e-3
        # 50 true hints colour it closer to the truth
        assert spread[-1]["ciede2000"] < spread[0]["ciede2000"]
        for r in guided:
            assert {"psnr_pooled", "baseline_psnr_pooled", "ciede2000", "baseline_ciede2000",
                    "colorfulness_ratio"} <= set(r)
        # the hints reach the model: the rows differ
        assert len({round(r["ciede2000"], 6) for r in guided}) > 1
    assert set(summary["targets"]) == {"real_hints", "real_guided"}
    assert set(summary["targets"]["real_guided"]) == {"hints10_ciede2000_below_gray", "hints10_psnr_3db_over_unguided",
                                                      "palette_ciede2000_below_unguided"}
    assert set(summary["targets"]["real_hints"]) == {"hints10_ciede2000_below_gray", "hints10_psnr_3db_over_unguided"}
    t = summary["targets"]["real_hints"]["hints10_psnr_3db_over_unguided"]
    assert t["met"] == (t["gain_db"] >= 3)
    assert "| real_guided | 10 | – |" in out and "copy-the-gray" in curve_table(summary)


def test_rerun_skips_finished_runs(study):
    tmp, data, *_ = study
    rc, _ = _cli(["--data", data, "--out", tmp / "out", "--quick", "--runs", "real_guided", "--json",
                  tmp / "again.json"])
    again = json.loads((tmp / "again.json").read_text())
    assert rc == 0 and again["runs"]["real_guided"]["status"] == "done"


def test_bad_data_folder_is_one_line(tmp_path):
    from manga_colorization.core import UserError
    with pytest.raises(UserError, match="needs train/ and test/"):
        _cli(["--data", tmp_path, "--out", tmp_path / "o", "--quick"])
    _tiny(tmp_path / "d")
    with pytest.raises(UserError, match="choose one of real_hints, real_guided"):
        _cli(["--data", tmp_path / "d", "--out", tmp_path / "o", "--quick", "--runs", "nope"])
