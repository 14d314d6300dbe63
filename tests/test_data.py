"""manga_colorization.data: loading every PIL mode, ASCP pairs, input modes, the dataset, the data module, the cache."""
import io
import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.core import UserError, rgb_to_gray, rgb_to_lab_norm, tensor2uint8
from manga_colorization.data import (INPUT_MODES, BadImageError, ColorizationDataset, EpochSampler, FileSource, ImageCache,
                                     SketchDataModule, SyntheticSource, dataset_splits, decode_resized, find_images, load_image,
                                     make_input, screentone, show_images, split_pair, to_display, xdog)
from manga_colorization.synthetic import synth_illustration, write_ascp


def _palette(transparent: bool) -> Image.Image:
    img = Image.new("P", (4, 3), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    if transparent: img.info["transparency"] = 1
    return img


MODES = {   # name: (make the image, file name, expected top-left RGB, tolerance)
    "L": (lambda: Image.new("L", (4, 3), 77), "a.png", (77, 77, 77), 0),
    "LA": (lambda: Image.new("LA", (4, 3), (0, 0)), "a.png", (255, 255, 255), 0),
    "RGBA": (lambda: Image.new("RGBA", (4, 3), (255, 0, 0, 128)), "a.png", (255, 127, 127), 1),
    "P-transparent": (lambda: _palette(True), "a.png", (255, 255, 255), 0),
    "P": (lambda: _palette(False), "a.png", (10, 200, 30), 0),
    "CMYK": (lambda: Image.new("CMYK", (4, 3), (0, 255, 255, 0)), "a.tif", (255, 0, 0), 0),
    "I;16": (lambda: Image.fromarray(np.full((3, 4), 257 * 100, np.uint16)), "a.png", (100, 100, 100), 0),
    "1": (lambda: Image.new("1", (4, 3), 1), "a.bmp", (255, 255, 255), 0),
    "RGB-webp": (lambda: Image.new("RGB", (4, 3), (1, 2, 3)), "a.webp", (1, 2, 3), 0),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_load_image_every_mode(tmp_path, mode):
    make, name, want, tol = MODES[mode]
    path = tmp_path / name
    make().save(path, **({"lossless": True} if name.endswith(".webp") else {}))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (4, 3)
    assert np.abs(np.array(img.getpixel((0, 0))) - np.array(want)).max() <= tol


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    r, g, b = load_image(tmp_path / "c.jpg").getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation(tmp_path):
    img = Image.new("RGB", (4, 3), (0, 0, 0)); img.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif(); exif[0x0112] = 6       # rotate 90° clockwise to view
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    view = load_image(tmp_path / "r.jpg")
    assert view.size == (3, 4) and view.getpixel((2, 0))[0] > 200


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("name,content,message", [
    ("empty.png", b"", "the file is empty"),
    ("text.png", b"just some text", "not a readable image"),
    ("cut.png", None, "not a readable image"),
    ("missing.png", "missing", "no such file"),
])
def test_bad_files_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None: path.write_bytes(_truncated_png())
    elif content != "missing": path.write_bytes(content)
    with pytest.raises(BadImageError) as e: load_image(path)
    assert name in str(e.value) and message in str(e.value)
    assert isinstance(e.value, UserError)


def test_decompression_bomb_guard_kept(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match="big.png.*MAX_IMAGE_PIXELS"): load_image(tmp_path / "big.png")


def test_find_images_recursive_any_case(tmp_path):
    for name in ["a.png", "b.JPG", "s/c.Jpeg", "s/t/d.webp", "e.TIFF", "f.bmp", "notes.txt", ".hidden.png", ".git/x.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == ["a.png", "b.JPG", "e.TIFF", "f.bmp", "s/c.Jpeg", "s/t/d.webp"]


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


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"): dataset_splits(tmp_path / "nope")
    with pytest.raises(UserError, match="no images"): SketchDataModule(tmp_path, num_workers=0)


def test_split_pair():
    pair = Image.new("RGB", (20, 10), (0, 0, 255)); pair.paste((255, 255, 255), (10, 0, 20, 10))
    color, sketch = split_pair(pair)
    assert color.size == sketch.size == (10, 10) and color.getpixel((5, 5)) == (0, 0, 255) and sketch.getpixel((5, 5)) == 255


@pytest.mark.parametrize("mode", INPUT_MODES)
def test_input_modes(mode):
    color = np.asarray(synth_illustration(0, 2, 48).color)
    for seed in range(3):
        x = make_input(color, mode, np.random.default_rng(seed))
        assert x.shape == (48, 48) and x.dtype == np.uint8 and x.std() > 5
        np.testing.assert_array_equal(x, make_input(color, mode, np.random.default_rng(seed)))
    assert make_input(Image.fromarray(color), mode).mode == "L"


def test_gray_is_bt601_and_sketch_uses_line_art():
    ill = synth_illustration(0, 4, 32)
    np.testing.assert_array_equal(make_input(np.asarray(ill.color), "gray"), np.asarray(ill.color.convert("L")))
    np.testing.assert_array_equal(make_input(np.asarray(ill.color), "sketch", sketch=np.asarray(ill.sketch)), np.asarray(ill.sketch))
    with pytest.raises(UserError, match="crayon"): make_input(np.asarray(ill.color), "crayon")


def test_screentone_is_a_halftone():
    for level in (0.4, 0.6, 0.8):
        tone = screentone(np.full((64, 64), round(level * 255), np.uint8), np.random.default_rng(0), pitch=5, angle=30)
        assert abs(tone.mean() / 255 - (level - 0.18) / 0.75) < 0.04          # keeps the average gray
        assert ((tone < 40) | (tone > 215)).mean() > 0.7                       # made of ink dots on paper
    a, b = (screentone(np.full((64, 64), 128, np.uint8), np.random.default_rng(s)) for s in (0, 1))
    assert (a != b).any()                                                      # random angle and pitch


def test_xdog_lines():
    gray = np.full((32, 32), 200, np.uint8); gray[:, 16:] = 60
    lines = xdog(gray)
    assert lines[:, :10].min() > 200 and lines[:, 14:17].min() < 100


def test_dataset_train_augmentation_and_val_plain():
    ds = ColorizationDataset(SyntheticSource(4), resize=(40, 40), train=True, seed=3)
    inp, target = ds[(1, 0)]
    assert inp.shape == (1, 40, 40) and target.shape == (3, 40, 40)
    assert inp.min() >= -1 and inp.max() <= 1 and target.min() >= -1 and target.max() <= 1
    torch.testing.assert_close(inp, rgb_to_gray(target), atol=2 / 127.5, rtol=0)
    torch.testing.assert_close(ds[(1, 0)][1], target)
    assert any(not torch.equal(ds[(1, e)][1], target) for e in range(1, 5))
    val = ColorizationDataset(SyntheticSource(4), resize=(40, 40), train=False)
    np.testing.assert_array_equal(tensor2uint8(val[1][1]), np.asarray(synth_illustration(0, 1, 40).color))


def test_out_ch_2_is_lab_chroma():
    rgb = ColorizationDataset(SyntheticSource(3), resize=32)[0][1]
    ab = ColorizationDataset(SyntheticSource(3), resize=32, out_ch=2)[0][1]
    assert ab.shape == (2, 32, 32) and ab.abs().max() <= 1
    torch.testing.assert_close(ab, rgb_to_lab_norm(rgb)[1:], atol=1e-5, rtol=0)


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


def test_synthetic_root_and_modes():
    dm = SketchDataModule("synthetic", batch_size=2, resize=24, input_mode="mix", out_ch=2, synthetic_n=(4, 2, 2), num_workers=0)
    x, y = next(iter(dm.val_loader))
    assert x.shape == (2, 1, 24, 24) and y.shape == (2, 2, 24, 24)


def test_bad_files_skipped_and_counted_once(tmp_path):
    root = tmp_path / "messy"
    write_ascp(root, 10, size=16, val_fraction=0.2, progress=False)
    (root / "train" / "000000.png").write_bytes(b"")
    (root / "train" / "000001.png").write_text("not a picture")
    (root / "train" / "000002.png").write_bytes((root / "train" / "000002.png").read_bytes()[:60])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = SketchDataModule(root, batch_size=1, resize=16, num_workers=0, cache=tmp_path / "cache")
        seen = sum(len(x) for _ in range(2) for x, _ in dm.train_loader)      # two epochs, no crash
    assert seen == 2 * 5
    assert sorted(os.path.basename(p) for p in dm.bad_files) == ["000000.png", "000001.png", "000002.png"]
    msgs = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(msgs) == 1 and "skipped 3 unreadable image(s)" in msgs[0]


def test_bad_files_without_cache_do_not_crash(tmp_path):
    root = tmp_path / "messy"
    write_ascp(root, 6, size=16, val_fraction=0.2, progress=False)
    (root / "train" / "000001.png").write_bytes((root / "train" / "000001.png").read_bytes()[:60])   # passes a header check
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = SketchDataModule(root, batch_size=1, resize=16, num_workers=0, cache=False)
        assert sum(len(x) for x, _ in dm.train_loader) == 5          # the broken one replaced by the next good one
    assert list(dm.dataset("train").bad) == [str(root / "train" / "000001.png")]


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


def test_epoch_sampler():
    s = EpochSampler(9, seed=4)
    e0, e1 = list(s), list(s)
    assert sorted(i for i, _ in e0) == list(range(9)) and e0 != e1
    s.set_epoch(1); assert list(s) == e1
    s.set_epoch(1, start=3); assert list(s) == e1[3:]
    ranks = [list(EpochSampler(9, seed=4, num_replicas=2, rank=r)) for r in range(2)]
    assert [len(r) for r in ranks] == [5, 5] and {i for r in ranks for i, _ in r} == set(range(9))


def test_loader_deterministic_across_workers():
    kw = dict(batch_size=2, resize=16, input_mode="mix", synthetic_n=(6, 2, 2), seed=7)
    a, b = SketchDataModule("synthetic", num_workers=0, **kw), SketchDataModule("synthetic", num_workers=1, **kw)
    a.set_epoch(3); b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a.train_loader, b.train_loader):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_show_images_channels():
    for c in (1, 2, 3):
        t = torch.rand(3, c, 8, 8) * 2 - 1
        assert to_display(t).shape == (3, 3, 8, 8)
        assert show_images(t) is not None
    assert show_images((torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, 8, 8))) is not None
    with pytest.raises(ValueError, match="1, 2 or 3 channels"): to_display(torch.zeros(1, 5, 4, 4))
    import matplotlib.pyplot as plt
    plt.close("all")


def test_limit_per_split(tmp_path):
    write_ascp(tmp_path / "d", 12, size=16, val_fraction=0.5, progress=False)
    dm = SketchDataModule(tmp_path / "d", limit=2, num_workers=0, cache=False)
    assert [len(dm.sources[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    dm = SketchDataModule("synthetic", limit=(5, 1, 1), num_workers=0)
    assert [len(dm.sources[s]) for s in ("train", "val", "test")] == [5, 1, 1]
