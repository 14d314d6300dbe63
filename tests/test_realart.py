"""`mangacolor realart` (experiments.realart) on a tiny fake unpacked tree (no apt, no network): the split is fixed by
names + hashes and checked against its list, name families stay on one side, oversize and unreadable files are
dropped and counted, transparency lands on white, and the folder loads."""
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from manga_colorization.data import SketchDataModule

ROOT = Path(__file__).resolve().parents[1]
from manga_colorization.experiments import realart

CLIP, WES = realart.SOURCES
N_GOOD = 10
NAMES = ("ant", "bee", "cat", "dog", "eel", "fam_01", "fam_02")     # fam_01 / fam_02: one name family


def _png(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _fake_cache(cache: Path) -> dict:
    "A fake `unpacked/` tree of both packages; the notable files by role."
    clip, wes = cache / "unpacked" / CLIP.package, cache / "unpacked" / WES.package
    for base, v in ((clip, "1:0.18-test"), (wes, "1:1.16-test")):
        base.mkdir(parents=True)
        (base / ".version").write_text(v + "\n")
    root, rng = clip / CLIP.root, np.random.default_rng(0)
    for i in range(N_GOOD - 3):
        _png(root / f"cat{i % 2}" / f"{NAMES[i]}.png",
             Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)))
    # right half fully transparent
    rgba = np.zeros((12, 12, 4), np.uint8); rgba[..., 0] = 200; rgba[:, :6, 3] = 255
    pal = Image.new("P", (12, 12), 1); pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    files = {"rgba": _png(root / "rgba.png", Image.fromarray(rgba, "RGBA")),
             # every pixel is the transparent index
             "palette": _png(root / "palette.png", pal, transparency=1),
             # 400 px: kept, shrunk to max_side
             "wide": _png(root / "wide.png", Image.new("LA", (40, 10), (90, 255))),
             "oversize": _png(root / "big.png", Image.new("RGB", (40, 40), (9, 9, 9))),   # 1600 px: over max_pixels
             "garbage": root / "garbage.png"}
    files["garbage"].write_bytes(b"not a png at all")
    data = (root / "cat0" / "ant.png").read_bytes()
    buf = io.BytesIO(); Image.new("RGB", (20, 20), (1, 2, 3)).save(buf, "PNG", compress_level=0)
    (root / "truncated.png").write_bytes(buf.getvalue()[:300])                          # header fine, pixels cut off
    (root / "dup.png").write_bytes(data)                                                  # same bytes as cat0/ant.png
    (root / "alias.png").symlink_to("cat0/ant.png")
    for i in range(3):
        _png(wes / WES.root / "humans" / f"p{i}.png",
             Image.fromarray(rng.integers(0, 255, (16, 14, 4), dtype=np.uint8), "RGBA"))
    return files


PARAMS = {"max_pixels": 1000, "max_side": 16, "heldout": 0.2, "val": 0.2}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realart")
    files = _fake_cache(tmp / "cache")
    summary = realart.build(tmp / "cache", tmp / "out", tmp / "split.json", write_split=True, **PARAMS)
    return tmp, files, summary, json.loads((tmp / "split.json").read_text())


def test_counts_hashes_and_drops(built):
    tmp, _, summary, record = built
    clip = record["sources"]["openclipart"]
    assert (clip["symlinks"], clip["duplicates"], clip["too_large"], clip["unreadable"]) == (1, 1, 1, 2)
    assert clip["kept"] == N_GOOD and record["sources"]["wesnoth"]["kept"] == 3
    splits = summary["splits"]
    assert splits["cross"] == 3 and splits["train"] + splits["val"] + splits["test"] == N_GOOD
    assert splits["val"] >= 2 and splits["test"] >= 2
    assert record["packages"] == {CLIP.package: "1:0.18-test", WES.package: "1:1.16-test"}
    assert record["params"] == {**realart.DEFAULTS, **PARAMS}
    base = tmp / "cache" / "unpacked"
    for f in record["files"]:
        pkg = CLIP.package if f["path"].startswith(CLIP.root) else WES.package
        assert f["sha256"] == hashlib.sha256((base / pkg / f["path"]).read_bytes()).hexdigest()
        assert f["split"] in realart.SPLITS and len(f["size"]) == 2
    names = {Path(f["path"]).name for f in record["files"]}
    assert not names & {"big.png", "garbage.png", "truncated.png", "alias.png"}
    assert {f["split"] for f in record["files"] if f["path"].startswith(WES.root)} == {"cross"}
    assert len({f["split"] for f in record["files"] if "fam_0" in f["path"]}) == 1        # a name family on one side


def test_name_families():
    assert {realart.family(p) for p in ("a/dog_01.png", "b/Dog-2.png", "dog.png", "dog (3).png",
                                        "dog 4.png")} == {"dog"}
    assert realart.family("x/1uparrow.png") == "1uparrow" and realart.family("x/70a010.png") == "70a"
    assert realart.family("x/123.png") == "123"
    entries = [{"path": f"p/{n}.png", "sha256": f"{i:064x}",
                "heldout_only": False} for i, n in enumerate(["a_1", "a_2", "a_3", "b", "c", "d", "e", "f"])]
    for seed in range(5):
        realart.assign_splits(entries, seed, heldout=0.25, val=0.125)
        assert len({e["split"] for e in entries if e["path"].startswith("p/a_")}) == 1
        assert sum(e["split"] == "test" for e in entries) >= 2 and sum(e["split"] == "val" for e in entries) >= 1


def test_split_is_deterministic_and_checked(built, tmp_path):
    tmp, _, _, record = built
    again = tmp_path / "split.json"
    realart.build(tmp / "cache", tmp_path / "out", again, write_split=True, **PARAMS)
    assert json.loads(again.read_text())["files"] == record["files"]
    # checks, parameters from the list
    realart.build(tmp / "cache", tmp_path / "out", again)
    with pytest.raises(realart.RealArtError, match="max-pixels is 1000 there but 2000 here"):
        realart.build(tmp / "cache", tmp_path / "out", again, max_pixels=2000)
    record["files"][0]["sha256"] = "0" * 64
    again.write_text(json.dumps(record))
    with pytest.raises(realart.RealArtError, match=r"1 file\(s\) differ.*--write-split"):
        realart.build(tmp / "cache", tmp_path / "out", again)
    record["packages"][CLIP.package] = "9:9"
    again.write_text(json.dumps(record))
    with pytest.raises(realart.RealArtError, match="openclipart-png is version 9:9 there but 1:0.18-test here"):
        realart.build(tmp / "cache", tmp_path / "out", again)


def test_transparency_on_white_and_shrunk(built):
    tmp, *_ = built
    out = tmp / "out"
    found = {p.name: p for p in out.rglob("*.png") if ".rendered" not in p.parts}
    rgba = np.asarray(Image.open(found["rgba.png"]))
    assert rgba.shape == (12, 12, 3) and (rgba[:, 8:] == 255).all() and (rgba[:, :4] == (200, 0, 0)).all()
    assert (np.asarray(Image.open(found["palette.png"])) == 255).all()
    assert Image.open(found["wide.png"]).size == (16, 4)


def test_loads_with_sketch_datamodule(built):
    tmp, *_ = built
    dm = SketchDataModule(tmp / "out", batch_size=2, resize=8, num_workers=0, cache=False, pairs=False)
    splits = built[2]["splits"]
    assert {s: len(v) for s, v in dm.sources.items()} == {s: splits[s] for s in ("train", "val", "test")}
    # the cross-domain folder is no split
    assert not any("humans" in str(p) for s in dm.sources.values() for p in s.paths)
    assert len(list((tmp / "out" / "cross").rglob("*.png"))) == 3
    x, y = next(iter(dm.test_loader))
    assert x.shape == (2, 1, 8, 8) and y.shape == (2, 3, 8, 8)


def test_cli_refuses_a_foreign_folder(built, tmp_path, capsys):
    tmp, *_ = built
    (tmp_path / "mine.txt").write_text("keep me")
    rc = realart.main(["build", "--cache", str(tmp / "cache"), "--out", str(tmp_path), "--split-list",
                       str(tmp / "split.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a realart dataset" in err and err.count("\n") == 1
    assert (tmp_path / "mine.txt").read_text() == "keep me"


# ---- the colour set (issue 23): its own sources, the colour rule, no leakage, its own split list, --drop-gray ----
TUX, UNITS = realart.COLOUR_SOURCES[1], realart.COLOUR_SOURCES[2]
GRAY_CLIP = {"palette.png", "wide.png"}          # all white / gray LA in the fake openclipart tree


def _fake_colour_packages(cache: Path) -> None:
    "Fake unpacked trees of Tux Paint's stamps and Wesnoth's unit sprites beside the fake openclipart + portraits."
    tux = cache / "unpacked" / TUX.package
    tux.mkdir(parents=True)
    (tux / ".version").write_text("2022.06.04-test\n")
    rng = np.random.default_rng(1)
    for name in ("animals/cat.png", "animals/cow.png", "food/pie.png", "food/fig.png", "cat0/ant.png"):
        _png(tux / TUX.root / name, Image.fromarray(rng.integers(0, 255, (10, 9, 3), dtype=np.uint8)))
    _png(tux / TUX.root / "nature/rock.png", Image.new("LA", (9, 9), (120, 255)))       # gray: dropped, counted
    units = cache / "unpacked" / UNITS.package / UNITS.root
    for name in ("humans/knight.png", "humans/knight-defend.png", "humans/knight-attack-1.png", "elves/mage.png",
                 "elves/mage-die2.png", "elves/scout.png", "orcs/grunt.png"):
        _png(units / name, Image.fromarray(rng.integers(0, 255, (8, 8, 4), dtype=np.uint8), "RGBA"))


@pytest.fixture(scope="module")
def colour(built):
    tmp, *_ = built
    _fake_colour_packages(tmp / "cache")
    summary = realart.build(tmp / "cache", tmp / "out" / "colour", tmp / "colour.json", write_split=True,
                            bench="colour", base_split=tmp / "split.json", store_root=tmp / "out", **PARAMS)
    return tmp, summary, json.loads((tmp / "colour.json").read_text())


def test_colour_sources_counts_and_licences(colour):
    _, summary, record = colour
    src = record["sources"]
    assert (src["openclipart"]["gray"], src["openclipart"]["kept"]) == (len(GRAY_CLIP), N_GOOD - len(GRAY_CLIP))
    assert (src["tuxpaint"]["found"], src["tuxpaint"]["gray"], src["tuxpaint"]["kept"]) == (6, 1, 5)
    assert (src["wesnoth-units"]["found"], src["wesnoth-units"]["frames"], src["wesnoth-units"]["kept"]) == (7, 2, 5)
    assert src["wesnoth"]["kept"] == 3 and src["tuxpaint"]["licence"] == "GPL-2+"
    assert src["openclipart"]["licence"] == "public domain" and src["tuxpaint"]["version"] == "2022.06.04-test"
    assert record["packages"] == {CLIP.package: "1:0.18-test", TUX.package: "2022.06.04-test",
                                  WES.package: "1:1.16-test"}
    assert record["colour"]["gray_below"] == realart.GRAY_CHROMA and "no_leakage" in record
    names = {Path(f["path"]).name for f in record["files"]}
    assert not names & (GRAY_CLIP | {"rock.png", "knight-attack-1.png", "mage-die2.png"})
    assert all(f["chroma"] >= realart.GRAY_CHROMA for f in record["files"])
    assert summary["dropped"]["tuxpaint"]["gray"] == 1 and summary["skipped"]["wesnoth-units"]["frames"] == 2
    assert summary["licences"]["wesnoth-units"] == "wesnoth-1.16-data 1:1.16-test, GPL-2+"
    assert sum(summary["splits"].values()) == len(record["files"]) == 8 + 5 + 5 + 3


def test_colour_set_never_leaks_the_default_held_out(colour):
    tmp, _, record = colour
    base = json.loads((tmp / "split.json").read_text())       # (another test edits the fixture's copy)
    before = {f["sha256"]: f["split"] for f in base["files"]}
    for f in record["files"]:          # openclipart and the portraits keep today's split (cross stays cross)
        if f["sha256"] in before: assert f["split"] == before[f["sha256"]], f
    held = {s for s, split in before.items() if split != "train"}
    assert not [f for f in record["files"] if f["split"] == "train" and f["sha256"] in held]
    ant = {f["path"].split("/")[-3]: f["split"] for f in record["files"] if f["path"].endswith("cat0/ant.png")}
    assert ant["png"] == ant["stamps"]           # tuxpaint's ant.png follows openclipart's ant family
    knights = {f["split"] for f in record["files"] if "/knight" in f["path"]}
    assert len(knights) == 1                     # a unit's sprites stay on one side


def test_colour_split_round_trip_and_leak_check(colour, tmp_path):
    tmp, _, record = colour
    again = tmp_path / "colour.json"
    kw = {"bench": "colour", "base_split": tmp / "split.json", "store_root": tmp / "out"}
    realart.build(tmp / "cache", tmp_path / "c1", again, write_split=True, **kw, **PARAMS)
    assert json.loads(again.read_text()) == record                        # build twice → the same list
    summary = realart.build(tmp / "cache", tmp_path / "c2", again, **kw)  # checked against it
    assert summary["splits"] == colour[1]["splits"]
    found = sorted(p.relative_to(tmp_path / "c2").as_posix() for p in (tmp_path / "c2").rglob("*.png")
                   if ".rendered" not in p.parts)
    assert "cross/wesnoth/humans/p0.png" in found and any(p.split("/")[1] == "tuxpaint" for p in found)
    base = json.loads((tmp / "split.json").read_text())
    held = next(f for f in base["files"] if f["split"] == "test")
    leaky = {**record, "files": [{**f, "split": "train"} if f["sha256"] == held["sha256"] else f
                                 for f in record["files"]]}
    again.write_text(json.dumps(leaky))
    with pytest.raises(realart.RealArtError, match="held out by the base benchmark"):
        realart.build(tmp / "cache", tmp_path / "c3", again, **kw)


def test_colour_cli_writes_out_colour(colour, tmp_path, capsys):
    tmp, summary, _ = colour
    rc = realart.main(["build", "--set", "colour", "--cache", str(tmp / "cache"), "--out", str(tmp_path / "ds"),
                       "--split-list", str(tmp / "colour.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "tuxpaint (tuxpaint-stamps-default 2022.06.04-test, GPL-2+)" in out and "gray=1" in out
    assert json.loads((tmp_path / "ds" / "colour" / realart.MANIFEST).read_text())["set"] == "colour"
    dm = SketchDataModule(tmp_path / "ds" / "colour", batch_size=2, resize=8, num_workers=0, cache=False, pairs=False)
    assert {s: len(v) for s, v in dm.sources.items()} == {s: summary["splits"][s] for s in ("train", "val", "test")}
    realart.check_out(tmp_path / "ds")          # a root holding only colour/ (a realart build) is no foreign folder
    # the training units' poses: same-character groups that never hold a held-out unit's picture
    groups = json.loads((tmp_path / "ds" / "colour" / realart.POSE_GROUPS).read_text())["groups"]
    assert f"same-character groups: {len(groups)} training units" in out
    ds = tmp_path / "ds" / "colour"
    held = {realart.unit_family(p.name) for s in ("val", "test") for p in (ds / s).rglob("*.png")
            if "wesnoth-units" in p.parts}
    assert all(realart.unit_family(Path(f).name) not in held for g in groups for f in g)
    train_units = {realart.unit_family(p.name) for p in (tmp_path / "ds" / "colour" / "train").rglob("*.png")
                   if "wesnoth-units" in p.parts}
    assert {realart.unit_family(Path(g[0]).name) for g in groups} == train_units & {"knight"}   # 2+ pictures
    rc = realart.main(["poses", "--cache", str(tmp / "cache"), "--out", str(tmp_path / "ds")])
    assert rc == 2 and "give --set colour" in capsys.readouterr().err


def test_drop_gray_is_recorded(built, tmp_path, capsys):
    tmp, *_ = built
    record = json.loads((tmp / "split.json").read_text())
    gray_train = sum(f["split"] == "train" and Path(f["path"]).name in GRAY_CLIP for f in record["files"])
    rc = realart.main(["build", "--drop-gray", "--cache", str(tmp / "cache"), "--out", str(tmp_path),
                       "--split-list", str(tmp / "split.json")])
    assert rc == 0 and f"--drop-gray: {gray_train} gray train target(s) left out" in capsys.readouterr().out
    manifest = json.loads((tmp_path / realart.MANIFEST).read_text())
    assert (manifest["drop_gray"], manifest["gray_dropped_from_train"]) == (True, gray_train)
    train = {p.name for p in (tmp_path / "train").rglob("*.png")}
    assert not train & GRAY_CLIP and len(train) == sum(f["split"] == "train" for f in record["files"]) - gray_train
    assert json.loads((tmp / "split.json").read_text()) == record              # the split list does not change
    plain = realart.build(tmp / "cache", tmp_path, tmp / "split.json")        # without the flag: all of train again
    assert plain["gray_dropped_from_train"] is None and plain["splits"]["train"] == len(train) + gray_train
