("Tests of manga_colorization.gallery over fake run folders (tests/fakes.py, no training): discovery, metrics, "
 "galleries, plots, browser reads.")
import json

import numpy as np
import pytest
import torch
from PIL import Image

import manga_colorization.gallery as gallery
from manga_colorization.core import UserError, img2tensor, rgb_to_gray
from manga_colorization.gallery import (LRUCache, ResultsBrowser, browse_runs, compare_grid, plot_curves,
                                        plot_final_metrics, read_results)
from manga_colorization.runs import LoadedGenerator, Run, TorchRunner, find_runs, run_name

from fakes import fake_grid, fake_run


class GrayCopy(torch.nn.Module):
    "A 'colorizer' that returns its gray input in RGB, optionally tinted."
    def __init__(self, tint=0.0):
        super().__init__(); self.tint = torch.nn.Parameter(torch.tensor(float(tint)))
    def forward(self, x):
        out = x.expand(-1, 3, -1, -1).clone(); out[:, 0] += self.tint
        return out.clamp(-1, 1)


@pytest.fixture(scope="module")
def big_grid(tmp_path_factory):
    "A fake 12 runs x 50 epochs grid (tiny 8 px tiles, 3 images per sheet)."
    return fake_grid(tmp_path_factory.mktemp("big"), archs=("unet", "unet_att", "unet_ext", "unet_att_ext"),
                     losses=("l1", "perceptual", "perceptual_anime"), epochs=50, n_images=3, size=8, generators=False)


@pytest.fixture
def count_opens(monkeypatch):
    "Counts every PIL.Image.open the gallery module makes, by path."
    opened = []
    real_open = Image.open
    def counting_open(fp, *a, **k):
        opened.append(str(fp)); return real_open(fp, *a, **k)
    monkeypatch.setattr(gallery.Image, "open", counting_open)
    return opened


def test_find_runs_and_results(tmp_path):
    grid = fake_grid(tmp_path / "g", epochs=2, n_images=2, size=8, generators=False)
    runs = find_runs(grid)
    assert [run_name(r) for r in runs] == ["unet__l1", "unet__perceptual", "unet_att__l1", "unet_att__perceptual"]
    assert find_runs([runs[1], runs[0]]) == [runs[1], runs[0]]
    rows = read_results(grid)
    assert {(r["arch"], r["loss"]) for r in rows} == {("unet", "l1"), ("unet", "perceptual"), ("unet_att", "l1"),
                                                      ("unet_att", "perceptual")}
    (grid / "results.csv").unlink()
    rows2 = read_results(grid)   # falls back to each run's last metrics.jsonl line
    assert [r["epoch"] for r in rows2] == [2, 2, 2, 2]
    with pytest.raises(UserError, match="no such run folder"): find_runs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a run folder"): find_runs(tmp_path / "empty")


def test_lru_cache_bounded():
    cache, made = LRUCache(3), []
    for k in [1, 2, 3, 1, 4, 2, 1]: cache.get(k, lambda k=k: made.append(k) or k)
    assert made == [1, 2, 3, 4, 2]   # 2 was evicted by 4 (1 had been used again)
    assert len(cache) == 3


def test_browser_reads_lazily_on_12x50(big_grid, count_opens):
    b = ResultsBrowser(big_grid)
    assert len(b.runs) == 12 and len(b.epoch.options) == 50
    assert len(count_opens) == 1 and b.reads == 1   # only the sheet shown: last epoch of the first run
    first = b.view.value
    for i in range(3): b.image.value = i           # image slider: crops the cached sheet
    for p in np.linspace(0, 1, 20): b.position.value = float(p)   # wipe: no reads
    assert len(count_opens) == 1
    for epoch in (1, 10, 20, 30, 10, 1, 50):      # revisits come from the cache
        b.epoch.value = epoch
    assert len(count_opens) == 5 and len(set(count_opens)) == 5   # 50 (shown first), 1, 10, 20, 30
    b.run.value = "unet_att__perceptual"
    assert len(count_opens) == 6 and b.view.value != first
    b.others.value = ("unet__l1", "unet_ext__l1", "unet_att_ext__perceptual_anime")
    assert len(count_opens) == 8                     # unet__l1 @ 50 already cached
    b.run.value = "unet__l1"; b.run.value = "unet_att__perceptual"
    assert len(count_opens) == 8
    assert b.reads == len(count_opens)
    assert "PSNR" in b.info.value and "unet_ext__l1" in b.info.value


def test_browser_cache_evicts(big_grid, count_opens):
    b = ResultsBrowser(big_grid, cache_size=2)
    for epoch in (1, 2, 3, 1): b.epoch.value = epoch   # 1 was evicted by 2, 3: read again
    assert len(count_opens) == 5 and len(b.samples._sheets) == 2


def test_browser_shows_epoch_metrics_and_new_epochs(tmp_path):
    grid = fake_grid(tmp_path / "g", archs=("unet",), losses=("l1",), epochs=2, n_images=2, size=8, generators=False)
    b = ResultsBrowser(grid)
    assert b.epoch.value == 2 and "psnr" in b.info.value
    run = grid / "unet__l1"
    Image.open(run / "samples" / "epoch_002.png").save(run / "samples" / "epoch_003.png")   # training goes on
    assert list(b.epoch.options) == [1, 2]
    b.refresh.click()
    assert list(b.epoch.options) == [1, 2, 3]


def test_compare_grid_worst_first_and_labels(tmp_path, monkeypatch):
    grid = fake_grid(tmp_path / "g", archs=("unet",), losses=("l1", "perceptual"), epochs=1, n_images=2, size=16,
                     generators=False)
    models = {"unet__l1": GrayCopy(0.0), "unet__perceptual": GrayCopy(0.3)}
    monkeypatch.setattr(gallery, "load_generator", lambda run,
                        device="cpu": LoadedGenerator(TorchRunner(models[run.name], "cpu"), {}, {"size": 16}))
    rng = np.random.default_rng(0)
    targets = torch.stack([img2tensor(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(6)])
    targets[2] = rgb_to_gray(targets[2]).expand(3, -1, -1)   # a gray picture: the gray copy is perfect there
    cmp = compare_grid(grid, images=(rgb_to_gray(targets), targets), n=2, select="best", out=tmp_path / "c.png")
    assert cmp.names == ["unet__l1", "unet__perceptual"]
    assert cmp.indices[0] == 2
    assert cmp.metrics[0]["unet__l1"]["psnr"] > cmp.metrics[0]["unet__perceptual"]["psnr"]
    saved = Image.open(tmp_path / "c.png")
    assert saved.size == cmp.image.size and saved.width > saved.height   # 4 columns x 2 rows
    worst = compare_grid(grid, images=(rgb_to_gray(targets), targets), n=6, select="worst")
    mean_psnr = [np.mean([m[n]["psnr"] for n in worst.names]) for m in worst.metrics]
    assert mean_psnr == sorted(mean_psnr) and worst.indices[-1] == 2
    seeded = [compare_grid(grid, images=(rgb_to_gray(targets), targets), n=3, seed=s).indices for s in (1, 1, 2)]
    assert seeded[0] == seeded[1] and len(seeded[0]) == 3


def test_plots(tmp_path):
    grid = fake_grid(tmp_path / "g", epochs=4, n_images=2, size=8, generators=False)
    fig = plot_curves(grid, keys=("loss_g", "psnr"), out=tmp_path / "curves.png")
    assert [len(a.lines) for a in fig.axes] == [4, 5]   # 4 runs; psnr also has the gray-input baseline
    assert list(fig.axes[1].lines[0].get_xdata()) == [1, 2, 3, 4]
    bars = plot_final_metrics(grid, keys=("psnr", "ssim"), out=tmp_path / "bars.png")
    heights = sorted(p.get_height() for p in bars.axes[0].patches)
    assert heights == sorted(r["psnr"] for r in read_results(grid))
    assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "bars.png").stat().st_size > 1000


def test_colorize_page_through_colorizer(tmp_path, monkeypatch):
    loaded, real = [], gallery.Colorizer
    # a tinted gray copy instead of weights on disk; colour detection off (the page is noise)
    def colorizer(path, device=None):
        loaded.append(path)
        return real(LoadedGenerator(TorchRunner(GrayCopy(0.5), "cpu"), {}, {"size": 16}), color_threshold=None)
    monkeypatch.setattr(gallery, "Colorizer", colorizer)
    page = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    out = gallery.colorize_page(page, tmp_path / "x.safetensors", _cache=LRUCache(1))
    assert out.size == page.size and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    assert (arr[..., 0] - arr[..., 1]).mean() > 30   # the red tint came through
    cache = LRUCache(1)
    for _ in range(2): gallery.colorize_page(page, tmp_path / "y.safetensors", _cache=cache)
    assert loaded == [tmp_path / "x.safetensors", tmp_path / "y.safetensors"]   # loaded once per checkpoint


def test_cli_gallery_on_grid_with_generators(tmp_path):
    from manga_colorization.cli import main
    grid = fake_grid(tmp_path / "g", archs=("unet",), losses=("l1",), epochs=1, n_images=2, size=32)
    meta = json.loads((grid / "unet__l1" / "generator.json").read_text())
    assert meta["generator"]["name"] == "unet"
    r = main(["gallery", str(grid), "--out", str(tmp_path / "cmp.png"), "--n", "2", "--plots", str(tmp_path / "plots")])
    assert r == 0 and (tmp_path / "cmp.png").exists() and (tmp_path / "plots" / "final_metrics.png").exists()
    assert main(["gallery", str(tmp_path / "nowhere")]) == 2


def test_sample_epochs_ignores_other_files(tmp_path):
    run = tmp_path / "r"; (run / "samples").mkdir(parents=True)
    for n in ("epoch_002.png", "epoch_010.png", "epoch_001.png", "notes.txt", "epoch_x.png"):
        (run / "samples" / n).write_bytes(b"")
    assert Run(run).sample_epochs() == [1, 2, 10]


def test_browser_default_looks_under_runs(tmp_path, monkeypatch):
    "ResultsBrowser() with no argument: every run under ./runs, the demo and each grid's cells, labelled by their path."
    fake_run(tmp_path / "runs" / "demo", epochs=1, size=8, generator=False)
    fake_grid(tmp_path / "runs" / "grid", archs=("unet",), losses=("l1", "perceptual"), epochs=1, n_images=2, size=8,
              generators=False)
    # three levels down: not searched
    fake_run(tmp_path / "runs" / "old" / "grid2" / "unet__l1", epochs=1, size=8, generator=False)
    monkeypatch.chdir(tmp_path)
    b = ResultsBrowser()
    assert list(b.by_name) == ["demo", "grid/unet__l1", "grid/unet__perceptual"]
    assert list(browse_runs("runs", depth=3))[-1] == "old/grid2/unet__l1"
    b.run.value = "grid/unet__perceptual"
    assert b.reads == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run folders to browse"): ResultsBrowser(tmp_path / "empty")


def test_browser_saves_without_overwriting(tmp_path, monkeypatch):
    "An uploaded page is colorized, shown at most page_width wide, and saved under a fresh name in save_to."
    from datetime import datetime, timezone
    grid = fake_grid(tmp_path / "g", archs=("unet",), losses=("l1",), epochs=1, n_images=2, size=16)
    monkeypatch.setattr(gallery, "colorize_page", lambda page, checkpoint, device="cpu": page)
    b = ResultsBrowser(grid, save_to=tmp_path / "colorized", page_width=50)
    (tmp_path / "colorized").mkdir(); (tmp_path / "colorized" / "scan.png").write_bytes(b"the user's own file")
    page = Image.fromarray(np.zeros((120, 80, 3), np.uint8))
    buf = __import__("io").BytesIO(); page.save(buf, format="PNG")
    b.upload.value = ({"name": "scan.jpg", "type": "image/jpeg", "size": len(buf.getvalue()),
                       "content": memoryview(buf.getvalue()),
                       "last_modified": datetime.now(timezone.utc)},)
    b.go.click()
    assert b.page_view.width == "50" and not b.save.disabled
    b.save.click()
    assert (tmp_path / "colorized" / "scan.png").read_bytes() == b"the user's own file"
    assert Image.open(tmp_path / "colorized" / "scan-2.png").size == (80, 120)
    assert str(tmp_path / "colorized" / "scan-2.png") in b.status.value


def test_compare_grid_on_checkpoint_files(tmp_path):
    "A training checkpoint (.pt), a .safetensors file and a run folder compare side by side."
    from manga_colorization.models import make_generator
    grid = fake_grid(tmp_path / "g", archs=("unet",), losses=("l1",), epochs=1, n_images=2, size=16)
    run = grid / "unet__l1"
    G = make_generator("unet", width=8, depth=4)
    (run / "checkpoints").mkdir()
    torch.save({"generator": G.state_dict(), "generator_config": G.config, "meta": {"size": 16}},
               run / "checkpoints" / "best.pt")
    rng = np.random.default_rng(1)
    targets = torch.stack([img2tensor(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(3)])
    cmp = compare_grid([run / "checkpoints" / "best.pt", run / "generator.safetensors", run],
                       images=(rgb_to_gray(targets), targets), n=3)
    assert cmp.names == ["unet__l1:best", "unet__l1", "unet__l1 (2)"]   # columns keep distinct labels
    assert cmp.metrics[0]["unet__l1"] == cmp.metrics[0]["unet__l1 (2)"]   # the folder loads its generator.safetensors
    # different weights, different outputs
    assert cmp.metrics[0]["unet__l1"]["psnr"] != cmp.metrics[0]["unet__l1:best"]["psnr"]
    assert sorted(cmp.indices) == [0, 1, 2]
