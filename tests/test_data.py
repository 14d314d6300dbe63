"""manga_colorization.data contracts the notebook cannot show cell by cell: the README example, split layouts, the cache on disk,
loader workers, and `EpochSampler` driving a DataLoader as the trainer does (DDP ranks, limit, resume).
Loading every image mode, input modes, the dataset and the sampler's semantics are tested in 01_data."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from manga_colorization.data import (ColorizationDataset, EpochSampler, FileSource, ImageCache, SketchDataModule, SyntheticSource,
                                     dataset_splits, decode_resized, find_images, show_images)
from manga_colorization.synthetic import write_ascp


def test_splits(tmp_path):
    for i in range(20): Image.new("RGB", (4, 4)).save(tmp_path / f"{i:02d}.png")
    s = dataset_splits(tmp_path, seed=1, val_fraction=0.25)
    assert sorted(sum(s.values(), [])) == find_images(tmp_path)          # every file once
    assert len(s["train"]) == 15 and len(s["val"]) + len(s["test"]) == 5
    assert dataset_splits(tmp_path, seed=1, val_fraction=0.25) == s
    assert dataset_splits(tmp_path, seed=2, val_fraction=0.25) != s
    root = tmp_path / "ascp"
    for split, n in (("train", 3), ("val", 4)):
        (root / split).mkdir(parents=True)
        for i in range(n): Image.new("RGB", (4, 4)).save(root / split / f"{i}.png")
    s = dataset_splits(root, seed=0)
    assert len(s["train"]) == 3 and len(s["val"]) == 2 and len(s["test"]) == 2       # test: a seeded slice of val
    (root / "test").mkdir(); Image.new("RGB", (4, 4)).save(root / "test" / "t.png")
    assert [p.name for p in dataset_splits(root)["test"]] == ["t.png"]


def test_seed_readme_example(tmp_path):
    write_ascp(tmp_path / "ascp", 14, size=32, val_fraction=0.5, progress=False)
    dm = SketchDataModule(tmp_path / "ascp", batch_size=5, resize=(64, 64), out_ch=3, num_workers=0, cache=tmp_path / "cache")
    gray, color = next(iter(dm.test_loader))
    assert gray.shape[1:] == (1, 64, 64) and color.shape[1:] == (3, 64, 64) and gray.shape[0] == color.shape[0] >= 2
    assert -1 <= gray.min() and gray.max() <= 1 and -1 <= color.min() and color.max() <= 1
    x, y = next(iter(dm.train_loader))
    assert x.shape == (5, 1, 64, 64) and y.shape == (5, 3, 64, 64)
    assert len(dm.val_loader.dataset) + len(dm.test_loader.dataset) == 7
    fig = show_images(color)
    assert fig is not None
    import matplotlib.pyplot as plt
    plt.close("all")


def test_cache_hits_and_invalidation(tmp_path):
    write_ascp(tmp_path / "d", 2, size=64, val_fraction=0.5, progress=False)
    files = find_images(tmp_path / "d")
    cache = ImageCache(tmp_path / "cache")
    src = FileSource(files, pairs=True, cache=cache)
    first = src.read(0, (32, 32))
    assert first.shape == (32, 32, 4) and (cache.hits, cache.misses) == (0, 1)
    np.testing.assert_array_equal(src.read(0, (32, 32)), first)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, decode_resized(files[0], (32, 32), True))
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    src.read(0, (32, 32))
    assert cache.misses == 2
    assert not list((tmp_path / "d").rglob("*.npy"))
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
    cache.clear()
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_unusable_cache_falls_back(tmp_path):
    write_ascp(tmp_path / "d", 4, size=16, val_fraction=0.25, progress=False)
    (tmp_path / "not_a_folder").write_text("x")
    with pytest.warns(UserWarning, match="cannot use the image cache"):
        dm = SketchDataModule(tmp_path / "d", batch_size=1, resize=16, num_workers=0, cache=tmp_path / "not_a_folder")
    assert dm.cache is None and sum(len(x) for x, _ in dm.train_loader) == 3 and not dm.bad_files


def test_loader_deterministic_across_workers():
    kw = dict(batch_size=2, resize=16, input_mode="mix", synthetic_n=(6, 2, 2), seed=7)
    a, b = SketchDataModule("synthetic", num_workers=0, **kw), SketchDataModule("synthetic", num_workers=1, **kw)
    a.set_epoch(3); b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a.train_loader, b.train_loader):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_max_images_per_split(tmp_path):
    write_ascp(tmp_path / "d", 12, size=16, val_fraction=0.5, progress=False)
    dm = SketchDataModule(tmp_path / "d", max_images=2, num_workers=0, cache=False)
    assert [len(dm.sources[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    dm = SketchDataModule("synthetic", max_images=(5, 1, 1), num_workers=0)
    assert [len(dm.sources[s]) for s in ("train", "val", "test")] == [5, 1, 1]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_sampler_drives_the_training_loader(world):
    "The trainer's use: one DataLoader per rank over a ColorizationDataset, drop_last, `limit` per epoch, resume from `start`."
    ds = ColorizationDataset(SyntheticSource(23, seed=1), resize=(16, 16), train=True, seed=1)
    samplers = [EpochSampler(ds, seed=5, num_replicas=world, rank=r, limit=18) for r in range(world)]
    loaders = [DataLoader(ds, batch_size=2, sampler=s, drop_last=True) for s in samplers]
    per_rank = max(18 // world, 1)
    for epoch in (0, 1):
        for s in samplers: s.set_epoch(epoch)
        keys = [list(s) for s in samplers]
        assert all(len(k) == per_rank for k in keys) and all(len(s) == per_rank for s in samplers)
        assert len({i for k in keys for i, _ in k}) == world * per_rank                  # no index on two ranks
        assert {e for k in keys for _, e in k} == {epoch}
        for s in samplers: s.set_epoch(epoch)
        assert [len(l) for l in loaders] == [per_rank // 2] * world and [sum(1 for _ in l) for l in loaders] == [per_rank // 2] * world
    s = samplers[0]
    s.set_epoch(1); x_all = torch.cat([x for x, _ in loaders[0]])
    s.set_epoch(1, start=4); x_rest = torch.cat([x for x, _ in loaders[0]])
    assert torch.equal(x_rest, x_all[4:4 + len(x_rest)]) and len(x_rest) == (per_rank - 4) // 2 * 2   # same crops and flips on resume
