"""Issue 11: the hostile-input corpus (tests/hostile.py, built at test time) through `load_image`, `SketchDataModule`
(every split, with and without the cache and loader workers), `mangacolor train --epochs 1` and `mangacolor colorize`
(files, folders, archives); and property-based tests of archive member names. Each case: the exit status, one line
naming the file, no traceback, nothing written outside --out, inputs byte-identical, good files still processed."""
import contextlib
import io
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import torch
from hypothesis import given, settings, strategies as st

from hostile import build_corpus, snapshot
from manga_colorization.cli import main as cli_main
from manga_colorization.pages import plan_members, safe_member_name
from manga_colorization.data import BadImageError, SketchDataModule, load_image
from manga_colorization.models import make_generator, save_generator



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, build_corpus(root)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("tiny-run")
    save_generator(make_generator("unet", width=8, depth=4).eval(), run,
                   {"size": 64, "input_mode": "gray", "out_ch": 3})
    return run


def _cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main([str(a) for a in argv])
    return rc, err.getvalue()


def _names(cases, **where) -> list:
    return [c for c in cases if all(getattr(c, k) == v for k, v in where.items())]


def test_load_image_on_every_case(corpus):
    root, cases = corpus
    before = snapshot(root)
    for c in _names(cases, kind="image") + _names(cases, kind="link"):
        if c.kind == "link" and c.path.is_dir(): continue
        try: img = load_image(c.path)
        except BadImageError as e:
            assert not c.readable and str(c.path) in str(e) and "\n" not in str(e), (c.name, str(e))
            continue
        assert c.readable and img.mode == "RGB" and min(img.size) >= 1, c.name
    assert snapshot(root) == before


@pytest.mark.parametrize("cache,workers", [(False, 0), (True, 0), (False, 2), (True, 2)])
def test_data_module_every_split(corpus, tmp_path, cache, workers):
    root, cases = corpus
    before = snapshot(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = SketchDataModule(root / "pages", batch_size=2, resize=16, num_workers=workers,
                              cache=tmp_path / "c" if cache else False,
                              val_fraction=0.3)
        seen = {s: sum(len(x) for x, _ in dm.loader(s)) for s in ("train", "val", "test")}
    lines = [str(w.message) for w in caught]
    real = [os.path.realpath(p) for s in dm.sources.values() for p in s.paths]
    # each real file once, every split yields batches
    assert len(real) == len(set(real)) and all(seen.values()), (real, seen)
    bad = {os.path.realpath(c.path) for c in _names(cases, kind="image", readable=False)}
    # at the check, or when read
    found = set(dm.bad_files) | {name for s in ("train", "val", "test") for name in dm.dataset(s).bad}
    # header fine: found in a worker
    late = set() if cache or not workers else {os.path.realpath(root / "pages" / "truncated.png")}
    assert bad - late <= {os.path.realpath(p) for p in found} <= bad, found
    for name in found: assert sum(Path(name).name in m for m in lines) >= 1, (name, lines)
    assert all("\n" not in m for m in lines), lines
    for kind in ("link loop", "broken link", ".gif"):
        assert sum(kind in m for m in lines) == 1, (kind, lines)
    assert snapshot(root) == before


def test_train_one_epoch_on_the_corpus(corpus, tmp_path):
    root, cases = corpus
    before = snapshot(root)
    env = dict(os.environ, MANGACOLOR_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    r = subprocess.run(["mangacolor", "train", "--data", str(root / "pages"), "--epochs", "1", "--size", "64",
                        "--width", "4", "--depth", "2",
                        "--batch-size", "2", "--device", "cpu", "--num-workers", "0", "--samples", "0", "--out",
                            str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=300, errors="backslashreplace")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert (tmp_path / "run" / "generator.safetensors").exists()
    for c in _names(cases, kind="image", readable=False): assert c.path.name in r.stderr, (c.name, r.stderr[-3000:])
    assert snapshot(root) == before


def test_colorize_folder(corpus, tiny, tmp_path):
    root, cases = corpus
    before, out = snapshot(root), tmp_path / "out"
    rc, err = _cli("colorize", root / "pages", "--checkpoint", tiny, "--out", out)
    failed = _names(cases, kind="image", readable=False)
    assert rc == 1 and f"{len(failed)} of" in err and "Traceback" not in err, err
    for c in failed: assert sum(c.path.name in line for line in err.splitlines()) == 1, (c.name, err)
    for kind in ("link loop", "broken link", ".gif"):
        assert sum(kind in line for line in err.splitlines()) == 1, (kind, err)
    written = {os.fsencode(p.relative_to(out / "pages")) for p in out.rglob("*") if p.is_file()}
    good = {os.fsencode(c.path.name) for c in _names(cases, kind="image", readable=True, skipped="")}
    assert written == good | {f"good_{i}.png".encode() for i in range(4)}, written
    assert snapshot(root) == before


def test_colorize_files_one_by_one(corpus, tiny, tmp_path):
    root, cases = corpus
    before = snapshot(root)
    for k, c in enumerate(_names(cases, kind="image") + _names(cases, kind="link")):
        if c.path.is_dir(): continue                      # a folder link given directly is that folder (tested above)
        out = tmp_path / f"o{k}"
        rc, err = _cli("colorize", c.path, "--checkpoint", tiny, "--out", out)
        assert "Traceback" not in err and err.count("\n") <= 2, (c.name, err)
        # given directly: not a page, or not found
        if c.skipped: assert rc == 2 and str(c.path) in err, (c.name, rc, err)
        elif c.readable: assert rc == 0 and len(list(out.iterdir())) == 1, (c.name, rc, err)
        else: assert rc == 1 and str(c.path) in err and not out.exists() or not any(out.iterdir()), (c.name, rc, err)
    assert snapshot(root) == before and not any(p.name.startswith("o") for p in root.iterdir())


def test_colorize_archives(corpus, tiny, tmp_path):
    root, cases = corpus
    before, out = snapshot(root), tmp_path / "out"
    rc, err = _cli("colorize", *[c.path for c in _names(cases, kind="archive")], root / "pages" / "good_0.png",
                   "--checkpoint", tiny, "--out", out)
    assert rc == 1 and "2 of 7 pages failed" in err and "Traceback" not in err, err
    lines = err.splitlines()
    for name, words in (("zip_slip.cbz", "'../../evil.png' -> 'evil.png'"),
                        ("absolute.cbz", "'/etc/abs.png' -> 'etc/abs.png'"),
                        ("zip_bomb.cbz", "zip bomb"), ("not_a_zip.cbz", "not a readable zip")):
        assert sum(name in l and words in l for l in lines) == 1, (name, err)
    assert sorted(p.name for p in out.iterdir()) == ["absolute.cbz", "good_0.png", "zip_slip.cbz"]
    with zipfile.ZipFile(out / "zip_slip.cbz") as z: assert z.namelist() == ["01.png", "evil.png"]
    assert snapshot(root) == before


# --- property-based: no member name leaves the output folder ------------------------------------------------------

_parts = st.sampled_from(["..", ".", "", " ", "C:", "c:..", "\\", "/", "a", "b.png", "..\\..", "\x00", "\x7f", "\u0085",
                          "ß", "SS"])
_names_st = st.lists(st.one_of(_parts, st.text(max_size=8)), min_size=1,
                     max_size=8).map("/".join) | st.text(max_size=40)


def _inside(out: Path, name: str) -> bool:
    target = os.path.normpath(os.path.join(out, name))
    return target.startswith(str(out) + os.sep) and Path(target).resolve().is_relative_to(out.resolve())


@settings(max_examples=300, deadline=None)
@given(_names_st)
def test_safe_member_name_never_leaves_the_folder(name):
    safe = safe_member_name(name)
    if safe is None: return
    parts = PurePosixPath(safe).parts
    assert not PurePosixPath(safe).is_absolute() and "\\" not in safe, safe
    assert not any(p in ("", ".", "..") for p in parts), safe
    assert not any(ord(ch) < 32 or 0x7f <= ord(ch) <= 0x9f for ch in safe), safe
    assert _inside(Path("/tmp/out"), safe), safe


@settings(max_examples=200, deadline=None)
@given(st.lists(_names_st, min_size=1, max_size=12))
def test_member_plan_is_safe_unique_and_complete(names):
    infos = [zipfile.ZipInfo(n) for n in names]
    members, changed = plan_members(infos)
    written = [m.name for m in members]
    assert len({n.casefold() for n in written}) == len(written), written                  # unique, also without case
    assert all(_inside(Path("/tmp/out"), n) for n in written), written
    kept = [i for i in infos if not i.filename.endswith("/")]
    # each member written or said dropped
    assert len(written) + sum(new is None for _, new in changed) == len(kept)
    assert {m.info.filename for m in members if m.name != m.info.filename} <= {old for old, _ in changed}
    if "mimetype" in written: assert written[0] == "mimetype" and members[0].compress_type == zipfile.ZIP_STORED
