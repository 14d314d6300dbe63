"""Experiment grid: layout, results table, finished cells skipped, interrupted cell resumed, shared settings enforced,
FLOP count."""
import csv

import pytest

from manga_colorization.core import UserError
from manga_colorization.experiments.grid import run_grid, train_step_flops
from manga_colorization.runs import Run

TINY = dict(size=32, width=8, depth=3, batch_size=4, epochs=1, limit=8, val_limit=4, device="cpu", pretrained=False,
            d_width=8, d_layers=2, samples=2, tensorboard=False)


class Stop(Exception):
    pass


def _grid(out, **kw):
    return run_grid(("unet", "unet_att"), ("l1", "perceptual"), "synthetic", out, verbose=False, **{**TINY, **kw})


def test_layout_skip_and_resume(tmp_path):
    out = tmp_path / "grid"

    def stop(trainer, event):
        if event == "step" and trainer.out.name == "unet_att__l1" and trainer.step == 1:
            raise Stop()

    with pytest.raises(Stop):
        _grid(out, ckpt_every=1, callbacks=[stop])
    assert [Run(out / c).status(1) for c in ("unet__l1", "unet__perceptual", "unet_att__l1",
                                             "unet_att__perceptual")] == \
        ["done", "done", "partial", "new"]
    before = (out / "unet__l1" / "metrics.jsonl").read_text()
    rows = _grid(out, ckpt_every=1)
    assert [r["status"] for r in rows] == ["skipped", "skipped", "resumed", "trained"]
    assert (out / "unet__l1" / "metrics.jsonl").read_text() == before
    for name in ("results.csv", "results.md", "gallery.png", "grid.json"):
        assert (out / name).exists()
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == ["unet__l1", "unet__perceptual", "unet_att__l1", "unet_att__perceptual"]
    assert {"psnr", "ssim", "best_psnr", "params_m", "train_time_s", "images_per_s", "baseline_psnr"} <= set(table[0])
    assert all(int(r["steps"]) == 2 for r in table)                  # same budget in every cell
    assert [r["status"] for r in _grid(out)] == ["skipped"] * 4
    with pytest.raises(UserError, match="every cell must share"):
        _grid(out, size=64)


def test_unknown_cell_names(tmp_path):
    with pytest.raises(UserError, match="unknown architecture, loss or guidance 'resnet'"):
        run_grid(("unet", "resnet"), ("l1",), "synthetic", tmp_path / "g", **TINY)
    with pytest.raises(UserError, match="unknown architecture, loss or guidance 'hint'"):
        run_grid(("unet",), ("l1",), "synthetic", tmp_path / "g", guidances=(None, "hint"), **TINY)


def test_train_step_flops_orders_losses():
    l1 = train_step_flops("unet", "l1", size=64, width=8, depth=4, d_width=8)
    perc = train_step_flops("unet", "perceptual", size=64, width=8, depth=4, d_width=8)
    anime = train_step_flops("unet", "perceptual_anime", size=64, width=8, depth=4, d_width=8)
    assert 0 < l1 < perc < anime


@pytest.mark.parametrize("where", ["inside", "same", "around"])
def test_grid_refuses_out_overlapping_data(tmp_path, where):
    data = tmp_path / "pages"
    (data / "samples").mkdir(parents=True)
    (data / "samples" / "page1.png").write_bytes(b"user")
    out = {"inside": data / "grid", "same": data, "around": tmp_path}[where]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError, match="overlap"):
        run_grid(("unet",), ("l1",), str(data), out, verbose=False, **TINY)
    assert sorted(tmp_path.rglob("*")) == before
    assert (data / "samples" / "page1.png").read_bytes() == b"user"
