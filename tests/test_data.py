"""manga_colorization.data contracts the notebook cannot show cell by cell: the README example, split layouts, the cache
on disk, loader workers, and `EpochSampler` driving a DataLoader as the trainer does (DDP ranks, limit, resume).
Loading every image mode, input modes, the dataset and the sampler's semantics are tested in 02_data."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from manga_colorization.data import (ColorizationDataset, EpochSampler, FileSource, ImageCache, SketchDataModule,
                                     SyntheticSource,
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
    dm = SketchDataModule(tmp_path / "ascp", batch_size=5, resize=(64, 64), out_ch=3, num_workers=0,
                          cache=tmp_path / "cache")
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
    # 3 train - 1 test (val has 1)
    assert dm.cache is None and sum(len(x) for x, _ in dm.train_loader) == 2 and not dm.bad_files


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
    ("The trainer's use: one DataLoader per rank over a ColorizationDataset, drop_last, `limit` per epoch, resume from "
     "`start`.")
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
        assert [len(l) for l in loaders] == [per_rank // 2] * world
        assert [sum(1 for _ in l) for l in loaders] == [per_rank // 2] * world
    s = samplers[0]
    s.set_epoch(1); x_all = torch.cat([x for x, _ in loaders[0]])
    s.set_epoch(1, start=4); x_rest = torch.cat([x for x, _ in loaders[0]])
    # same crops and flips on resume
    assert torch.equal(x_rest, x_all[4:4 + len(x_rest)]) and len(x_rest) == (per_rank - 4) // 2 * 2


def test_resize_filter_through_the_parallel_check_and_cache(tmp_path):
    ("The seed's bilinear filter reaches the parallel file check, which fills the cache under its own key (bicubic "
     "entries stay apart).")
    write_ascp(tmp_path / "d", 80, size=32, val_fraction=0.1, progress=False)
    for filt in ("bicubic", "bilinear"):
        dm = SketchDataModule(tmp_path / "d", resize=16, num_workers=2, cache=tmp_path / "c", resize_filter=filt,
                              augment="none")
        # > 64 files: checked in worker processes
        assert dm.check("train") == [] and len(dm.sources["train"]) > 64
        src = dm.sources["train"]
        assert dm.cache.get(src.paths[0], (16, 16), True, filt) is not None
        np.testing.assert_array_equal(src.read(0, (16, 16)), decode_resized(src.paths[0], (16, 16), True, filt))
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 2 * len(src.paths)


# --- issue 11: hostile inputs, round two --------------------------------------------------------------------------

def _colors(folder, n, size=(16, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n): Image.new("RGB", size, (20 * i, 100, 200 - 10 * i)).save(folder / f"{i:02d}.png")


def test_non_utf8_file_name_through_the_cache(tmp_path):
    ("Issue 11.1: a name with bytes that are not UTF-8 (old Windows / Japanese archives) trains through the default "
     "cache.")
    _colors(tmp_path / "d", 6)
    raw = os.path.join(os.fsencode(tmp_path / "d"), b"\xff\xfe-page.png")
    with open(raw, "wb") as f: Image.new("RGB", (16, 16), (9, 9, 9)).save(f, "PNG")
    for workers in (0, 2):
        dm = SketchDataModule(tmp_path / "d", batch_size=2, resize=8, cache=tmp_path / f"c{workers}",
                              num_workers=workers, val_fraction=0.3)
        seen = sum(len(x) for s in ("train", "val", "test") for x, _ in dm.loader(s))
        assert dm.bad_files == {} and seen >= 6
        assert any(os.fsencode(p).endswith(b"\xff\xfe-page.png") for s in dm.sources.values() for p in s.paths)


def test_links_give_each_real_file_once_and_loops_are_said(tmp_path):
    ("Issue 11.2 and 11.5: a link loop, a second link to a folder, a dangling link, a .gif: each real image once, one "
     "line per kind.")
    d = tmp_path / "d"; _colors(d / "sub", 6)
    (d / "sub" / "loop").symlink_to("..")                      # ln -s .. loop
    (d / "alias").symlink_to("sub")                            # the same folder again
    (d / "gone.png").symlink_to(tmp_path / "nowhere.png")      # dangling
    Image.new("RGB", (8, 8)).save(d / "anim.gif")
    with pytest.warns(UserWarning) as caught: splits = dataset_splits(d, val_fraction=0.3)
    real = [os.path.realpath(p) for v in splits.values() for p in v]
    assert len(real) == len(set(real)) == 6, splits
    lines = [str(w.message) for w in caught]
    assert all("\n" not in m for m in lines), lines
    for words in (("link loop", "loop"), ("dangling", "gone.png"), (".gif",)):
        assert sum(all(x in m for x in words) for m in lines) == 1, (words, lines)


@pytest.mark.parametrize("n", [3, 5, 10, 40])
def test_splits_never_share_a_file(tmp_path, n):
    "Issue 11.2: validation and test images are never training images, nor each other (small folders included)."
    _colors(tmp_path / "d", n)
    s = dataset_splits(tmp_path / "d", seed=0)
    sets = [set(map(os.path.realpath, v)) for v in s.values()]
    assert all(sets) and not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2]), s
    root = tmp_path / "ascp"; _colors(root / "train", 4); _colors(root / "val", 3)
    # a test image that is a train image
    (root / "test").mkdir(); (root / "test" / "x.png").symlink_to(root / "train" / "00.png")
    with pytest.warns(UserWarning, match="in more than one split"): s = dataset_splits(root)
    assert root / "train" / "00.png" not in s["train"] and len(s["test"]) == 1


def test_max_pixels_is_an_option(tmp_path):
    ("Issue 11.6: the pixel limit is an argument (load_image, SketchDataModule), its message names the option, the "
     "default stays PIL's.")
    _colors(tmp_path / "d", 5); _colors(tmp_path / "d" / "big", 1, size=(64, 64))
    from manga_colorization.data import BadImageError, load_image
    with pytest.raises(BadImageError, match=r"64x64.*--max-pixels") as e:
        load_image(tmp_path / "d/big/00.png", max_pixels=1000)
    assert str(tmp_path / "d/big/00.png") in str(e.value) and "MAX_IMAGE_PIXELS" not in str(e.value)
    assert load_image(tmp_path / "d/big/00.png", max_pixels=4096).size == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 89478485                                    # PIL's own guard left as it was
    for cache in (False, tmp_path / "c"):
        dm = SketchDataModule(tmp_path / "d", batch_size=1, resize=8, cache=cache, num_workers=0, max_pixels=1000,
                              val_fraction=0.4)
        for s in ("train", "val", "test"): dm.check(s)
        assert list(dm.bad_files) == [str(tmp_path / "d/big/00.png")], dm.bad_files
