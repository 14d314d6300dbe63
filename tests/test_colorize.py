"""`colorize`'s contracts that its notebook cannot show: the `mangacolor colorize` / `export` command lines (exit codes,
never overwriting, archives, real-world files, the progress bar on a terminal) and the ways a `Colorizer` is given
its generator."""
import contextlib
import io
import os
import pty
import re
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.cli import main as cli_main
from manga_colorization.colorize import Colorizer, recombine
from manga_colorization.core import UserError, bf16_supported, default_device, resolve_precision
from manga_colorization.models import make_generator, save_generator
from manga_colorization.pages import check_zip, read_member
from manga_colorization.runs import OnnxRunner, export_onnx, load_generator
from manga_colorization.synthetic import synth_page


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny random UNet saved as a run folder: (G, folder). The command-line contracts do not need a trained one."
    torch.manual_seed(0)
    G = make_generator("unet", width=8, depth=4).eval()
    run = tmp_path_factory.mktemp("run")
    save_generator(G, run, {"size": 64, "input_mode": "gray", "out_ch": 3})
    return G, run


@pytest.fixture(scope="module")
def page():
    return synth_page(seed=0, index=0, size=(160, 224))


def test_recombine_keeps_luma_and_scales_chroma_into_gamut():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    rgb = recombine(gray, rng.normal(0, 0.5, (2, 32, 32)).astype(np.float32))
    assert np.abs(np.asarray(Image.fromarray(rgb).convert("L"), np.int16) - gray).max() <= 1
    assert np.ptp(rgb.astype(int),
                  axis=2)[gray == 0].max() == 0 and np.ptp(rgb.astype(int), axis=2)[gray == 255].max() == 0


def test_generator_given_as_pt_run_folder_loaded_or_module_gives_the_same_page(tiny, tmp_path, page):
    G, run = tiny
    torch.save({"generator": G.state_dict(), "generator_config": G.config, "meta": {"size": 64}}, tmp_path / "last.pt")
    ref = np.asarray(Colorizer(G, {"size": 64}, device="cpu").colorize(page.gray))
    for given in (tmp_path / "last.pt", run, load_generator(run)):
        col = Colorizer(given, device="cpu")
        assert (col.size, col.multiple) == (64, 16) and np.array_equal(np.asarray(col.colorize(page.gray)), ref)


def test_onnx_backend_for_a_run_folder(tiny, page):
    pytest.importorskip("onnxruntime")
    col = Colorizer(tiny[1], device="cpu", backend="onnx")
    assert col.G.backend == "onnx" and col.G.module is None
    # ONNX runs fp32
    ref = np.asarray(Colorizer(tiny[1], device="cpu", precision="fp32").colorize(page.gray), np.int16)
    assert np.abs(np.asarray(col.colorize(page.gray), np.int16) - ref).max() <= 1
    assert col.G.precision == Colorizer(tiny[1], device="cpu", backend="onnx", precision="bf16").G.precision == "fp32"


def test_missing_checkpoint_or_wrong_generator_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="nope.pt"): Colorizer(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="unknown backend"): Colorizer(tmp_path, backend="tf")
    with pytest.raises(TypeError, match="LoadedGenerator"): Colorizer(torch.nn.Identity())


def test_device_auto(tiny):
    assert Colorizer(tiny[0], {"size": 64}).device.type == default_device().type


def _lying_zip(method, crc_too=False):
    ("A one-member zip whose central directory declares 10 bytes for a 4000-byte member (and, with crc_too, the CRC of "
     "those 10).")
    payload = bytes(range(256)) * 15 + bytes(160)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z: z.writestr("001.png", payload)
    data = bytearray(buf.getvalue())
    cd = data.rfind(b"PK\x01\x02")                 # central directory header: CRC at +16, uncompressed size at +24
    struct.pack_into("<I", data, cd + 24, 10)
    if crc_too: struct.pack_into("<I", data, cd + 16, zlib.crc32(payload[:10]))
    return bytes(data)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("crc_too", [False, True])
def test_read_member_refuses_member_larger_than_declared(method, crc_too):
    with zipfile.ZipFile(io.BytesIO(_lying_zip(method, crc_too))) as z:
        info = z.infolist()[0]
        assert info.file_size == 10 and check_zip(z, "liar.cbz") == [info]      # the declared sizes pass the bomb check
        # zipfile stops at the declared size: bounded
        if method == zipfile.ZIP_DEFLATED and crc_too:
            assert len(read_member(z, info, "liar.cbz")) == 10
            return
        with pytest.raises(UserError, match=r"liar.cbz: member '001.png' is larger than it declares"):
            read_member(z, info, "liar.cbz")


def test_lying_archive_in_a_batch_is_reported(tiny, tmp_path):
    (tmp_path / "liar.cbz").write_bytes(_lying_zip(zipfile.ZIP_DEFLATED))
    rc, err = _cli("colorize", tmp_path / "liar.cbz", "--checkpoint", tiny[1], "--out", tmp_path / "out")
    assert rc == 1 and "1 of 1 pages failed" in err and "is larger than it declares" in err, err
    assert not (tmp_path / "out/liar.cbz").exists()


@pytest.mark.parametrize("pages,out", [("book", "book"), ("book/ch1", "book")])
def test_input_folder_and_out_folder_nested_is_a_clear_error(tiny, tmp_path, pages, out):
    (tmp_path / "book" / "ch1").mkdir(parents=True)
    synth_page(seed=1, index=0, size=(64, 64)).gray.save(tmp_path / "book" / "ch1" / "p1.png")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc, err = _cli("colorize", tmp_path / pages, "--checkpoint", tiny[1], "--out", tmp_path / out)
    assert rc == 2 and err.count("\n") == 1 and "no images" not in err, err
    assert str(tmp_path / pages) in err and str(tmp_path / out) in err and "inside" in err and ("choose another --out "
                                                                                                "folder") in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before    # nothing written


def test_out_folder_inside_the_input_folder_is_never_read_back(tiny, tmp_path):
    (tmp_path / "book" / "ch1").mkdir(parents=True)
    synth_page(seed=1, index=0, size=(64, 64)).gray.save(tmp_path / "book" / "ch1" / "p1.png")
    for attempt in range(2):        # the second run must not take the first run's outputs for new pages
        rc, err = _cli("colorize", tmp_path / "book", "--checkpoint", tiny[1], "--out", tmp_path / "book" / "colored")
        assert rc == 0, err
    colored = tmp_path / "book" / "colored"
    outputs = sorted(p.relative_to(colored) for p in colored.rglob("*.png"))
    assert outputs == [Path("book/ch1/p1.png")], outputs


def test_progress_bar_on_a_terminal(tiny, tmp_path):
    "`mangacolor colorize` on a folder draws a tqdm bar (pages done / total) on stderr when stderr is a terminal."
    src = tmp_path / "in"; src.mkdir()
    for i in range(3): synth_page(seed=6, index=i, size=(64, 96)).gray.save(src / f"p{i}.png")
    leader, follower = pty.openpty()
    r = subprocess.run(["mangacolor", "colorize", str(src), "--checkpoint", str(tiny[1]), "--out",
                        str(tmp_path / "out"), "--device", "cpu"],
                       stdout=subprocess.PIPE, stderr=follower, text=True, timeout=300, check=False)
    os.close(follower)
    err = b""
    while True:
        try: chunk = os.read(leader, 65536)
        except OSError: break
        if not chunk: break
        err += chunk
    os.close(leader)
    assert r.returncode == 0, err.decode(errors="replace")
    assert re.search(r"colorize: 100%.*3/3", err.decode(errors="replace")), err


def _cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main([str(a) for a in argv])
    return rc, err.getvalue()


def test_cli_folders_archives_corrupt_and_resume(tiny, tmp_path):
    book = tmp_path / "book"; (book / "sub").mkdir(parents=True)
    pg = lambda i: synth_page(seed=3, index=i, size=(96, 128))
    pg(0).gray.save(book / "p1.png"); pg(1).gray.save(book / "sub" / "p2.png")
    (book / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    with zipfile.ZipFile(tmp_path / "v.cbz", "w") as z:
        z.writestr("ComicInfo.xml", "<ComicInfo/>")
        for name, i in (("02.png", 2), ("01.png", 3), ("../up.png", 4)):
            b = io.BytesIO(); pg(i).gray.save(b, "PNG"); z.writestr(name, b.getvalue())
        z.writestr("03.png", b"not a png")
    out = tmp_path / "out"
    rc, err = _cli("colorize", book, tmp_path / "v.cbz", "--checkpoint", tiny[1], "--out", out)
    assert rc == 1 and "2 of 7 pages failed" in err and "bad.png" in err and "v.cbz:03.png" in err, err
    assert (out / "book/p1.png").exists() and (out / "book/sub/p2.png").exists() and not (out / "book/bad.png").exists()
    with zipfile.ZipFile(out / "v.cbz") as z:
        assert z.namelist() == ["ComicInfo.xml", "02.png", "01.png", "up.png", "03.png"]
        assert z.read("03.png") == b"not a png"                                  # a bad page is kept, unchanged
    mtime = (out / "book/p1.png").stat().st_mtime_ns
    rc, _ = _cli("colorize", book, "--checkpoint", tiny[1], "--out", out)
    assert rc == 1 and (out / "book/p1.png").stat().st_mtime_ns == mtime      # resumed: existing outputs skipped
    rc, _ = _cli("colorize", book / "p1.png", "--checkpoint", tiny[1], "--out", out / "book", "--overwrite")
    assert rc == 0 and (out / "book/p1.png").stat().st_mtime_ns != mtime
    rc, err = _cli("colorize", book / "p1.png", "--checkpoint", tiny[1], "--out", book)
    assert rc == 2 and "would overwrite the input" in err


def test_exit_code_matches_failed_count_and_is_documented(tiny, tmp_path, capsys):
    src = tmp_path / "in"; src.mkdir()
    synth_page(seed=5, index=0, size=(64, 96)).gray.save(src / "good.png")
    (src / "bad1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    (src / "bad2.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "out")
    m = re.search(r"(\d+) of (\d+) pages failed", err)
    assert m and (int(m[1]), int(m[2])) == (2, 3) and rc == 1, err
    assert "bad1.png" in err and "bad2.jpg" in err and (tmp_path / "out/in/good.png").exists()
    (src / "bad1.png").unlink(); (src / "bad2.jpg").unlink()
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "out")
    # nothing failed (the page is skipped): 0
    assert rc == 0 and "failed" not in err, err
    with pytest.raises(SystemExit) as e: cli_main(["colorize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "exit status: 0" in text and "1 some pages failed" in text and ("N of M pages failed' "
                                                                                                 "is on stderr") in text
    assert "2 usage or user error" in text


def test_export_refuses_existing_files_and_checkpoint_files(tiny, tmp_path):
    pytest.importorskip("onnx")
    G, _ = tiny
    run = tmp_path / "run"
    save_generator(G, run, {"size": 64})
    torch.save({"generator": G.state_dict(), "generator_config": G.config, "meta": {"size": 64}}, tmp_path / "last.pt")
    cfg = (run / "generator.json").read_bytes()
    # the sidecar would be the checkpoint's own .json
    for ckpt in (run, run / "generator.safetensors", run / "generator.json"):
        rc, err = _cli("export", "--onnx", "--checkpoint", ckpt, "--out", run / "generator.onnx", "--overwrite")
        assert rc == 2 and "a file of the checkpoint" in err and err.count("\n") == 1, err
    rc, err = _cli("export", "--onnx", "--checkpoint", tmp_path / "last.pt", "--out", tmp_path / "last.onnx")
    assert rc == 0, err
    # the .onnx path itself is the checkpoint (via a link)
    (tmp_path / "link.onnx").symlink_to(tmp_path / "last.pt")
    rc, err = _cli("export", "--onnx", "--checkpoint", tmp_path / "last.pt", "--out", tmp_path / "link.onnx",
                   "--overwrite")
    assert rc == 2 and "a file of the checkpoint" in err, err
    assert (run / "generator.json").read_bytes() == cfg and not (run / "generator.onnx").exists()
    onnx_bytes = (tmp_path / "last.onnx").read_bytes()
    rc, err = _cli("export", "--onnx", "--checkpoint", run, "--out", tmp_path / "last.onnx")
    assert rc == 2 and "exists" in err and "--overwrite" in err, err
    assert (tmp_path / "last.onnx").read_bytes() == onnx_bytes
    # an existing sidecar alone is refused too
    (tmp_path / "only.json").write_text("{}")
    rc, err = _cli("export", "--onnx", "--checkpoint", run, "--out", tmp_path / "only.onnx")
    assert rc == 2 and "only.json exists" in err and (tmp_path / "only.json").read_text() == "{}", err
    rc, err = _cli("export", "--onnx", "--checkpoint", run, "--out", tmp_path / "last.onnx", "--overwrite")
    assert rc == 0 and (tmp_path / "last.json").exists(), err


def test_onnx_attention_variant_dynamic_shapes():
    pytest.importorskip("onnxruntime")
    G = make_generator("unet_att", width=8, depth=4).eval()
    buf = io.BytesIO(); export_onnx(G, buf, size=32)
    runner = OnnxRunner(buf.getvalue())
    for shape in ((1, 1, 32, 32), (2, 1, 48, 64)):
        x = torch.rand(shape) * 2 - 1
        with torch.no_grad(): ref = G(x)
        assert torch.allclose(runner(x.numpy()), ref, atol=1e-4)


def test_cli_real_world_formats(tiny, tmp_path):
    ("CMYK JPEG, palette PNG with transparency, 16-bit gray PNG, a truncated JPEG: decoded by data.load_image; the bad "
     "one is counted.")
    src = tmp_path / "in"; src.mkdir()
    gray = synth_page(seed=4, index=0, size=(96, 128)).gray
    gray.convert("RGB").convert("CMYK").save(src / "cmyk.jpg", quality=90)
    pal = gray.convert("P"); pal.info["transparency"] = 0; pal.save(src / "palette.png")
    Image.fromarray(np.asarray(gray, np.uint16) * 257).save(src / "deep.png")
    buf = io.BytesIO(); gray.save(buf, "JPEG"); (src / "cut.jpg").write_bytes(buf.getvalue()[:300])
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "out")
    assert rc == 1 and "1 of 4 pages failed" in err and "cut.jpg" in err, err
    for name in ("cmyk.jpg", "palette.png", "deep.png"):
        out = Image.open(tmp_path / "out" / "in" / name)
        assert out.mode == "RGB" and out.size == gray.size


# --- issue 11: hostile inputs, round two --------------------------------------------------------------------------

@pytest.fixture
def umask027():
    "Run under umask 027 (files 0640), then restore the caller's."
    old = os.umask(0o027)
    yield
    os.umask(old)


def _png(img) -> bytes:
    b = io.BytesIO(); img.save(b, "PNG"); return b.getvalue()


def test_written_pages_and_archives_get_the_modes_open_gives(tiny, tmp_path, umask027):
    "Issue 11.3: outputs are written atomically but with the umask's mode (0666 & ~umask), not mkstemp's 0600."
    src = tmp_path / "in"; src.mkdir()
    synth_page(seed=7, index=0, size=(64, 96)).gray.save(src / "p.png")
    with zipfile.ZipFile(src / "v.cbz", "w") as z:
        z.writestr("01.png", _png(synth_page(seed=7, index=1, size=(64, 96)).gray))
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "out")
    assert rc == 0, err
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes == {"p.png": "0o640", "v.cbz": "0o640"}, modes


def test_run_writers_get_the_modes_open_gives(tiny, tmp_path, umask027):
    ("Issue 11.3, checked where colorize reads from: `runs.atomic_save` and the `Run` writers already give 0666 & "
     "~umask.")
    from manga_colorization.runs import Run, atomic_save
    atomic_save({"a": 1}, tmp_path / "x.pt")
    run = Run(tmp_path / "run"); run.write_config({}); run.append_metrics({"epoch": 1}); run.sync_metrics(1, None)
    run.save_checkpoint({"a": 1}, best=True)
    modes = {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777)
             for p in tmp_path.rglob("*") if p.is_file()}
    assert set(modes.values()) == {"0o640"}, modes


def test_saved_generator_gets_the_mode_open_gives(tiny, tmp_path, umask027):
    save_generator(tiny[0], tmp_path, {"size": 64})
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == {"generator.safetensors": "0o640", "generator.json": "0o640"}, modes


COMICINFO = ('<?xml version="1.0" encoding="utf-8"?>\n'
             '<ComicInfo xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
             '  <Title>Vol &amp; 1</Title>\n  <Pages>\n'
             '    <Page Image="0" Type="FrontCover" ImageSize="11" ImageWidth="1" ImageHeight="2" />\n'
             "    <Page Image='1' ImageSize='22' Key='k'/>\n"
             '    <Page Image="2" DoublePage="true" />\n'
             '    <Page Image="3" ImageSize="44" />\n'
             '  </Pages>\n</ComicInfo>\n')


def _cbz_with_metadata(path: Path, pages: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        # ZipInfo defaults to ZIP_STORED
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.comicbook+zip")
        z.writestr("ComicInfo.xml", COMICINFO)
        for name, data in pages.items(): z.writestr(name, data)


def _check_comicinfo_v2(xml: bytes):
    ("The ComicInfo v2.0 schema's rules for what we touch: a ComicInfo root, Pages/Page with an int Image, long "
     "ImageSize, int sizes.")
    import xml.etree.ElementTree as ET
    root = ET.fromstring(xml)
    assert root.tag == "ComicInfo"
    for page in root.iter("Page"):
        int(page.attrib["Image"])
        for key in ("ImageSize", "ImageWidth", "ImageHeight"):
            if key in page.attrib: assert re.fullmatch(r"-?\d+", page.attrib[key]), page.attrib
    return root


def test_cbz_metadata_mimetype_renames_and_gray_pages(tiny, tmp_path):
    ("Issue 11.4: ComicInfo page sizes follow the re-encoded pages, mimetype stays first and stored, renames are said, "
     "blank pages stay gray.")
    pg = lambda i: synth_page(seed=8, index=i, size=(64, 96)).gray
    pages = {"02.png": _png(pg(0)), "01.png": _png(pg(1)), "../../03.png": _png(pg(2)),
             "/abs/04.png": _png(Image.new("L", (64, 96), 255))}
    _cbz_with_metadata(tmp_path / "v.cbz", pages)
    rc, err = _cli("colorize", tmp_path / "v.cbz", "--checkpoint", tiny[1], "--out", tmp_path / "out")
    assert rc == 0, err
    with zipfile.ZipFile(tmp_path / "out/v.cbz") as z:
        assert z.namelist() == ["mimetype", "ComicInfo.xml", "02.png", "01.png", "03.png", "abs/04.png"]
        assert z.infolist()[0].compress_type == zipfile.ZIP_STORED
        assert z.read("mimetype") == b"application/vnd.comicbook+zip"
        xml = z.read("ComicInfo.xml")
        order = ["01.png", "02.png", "03.png", "abs/04.png"]                      # reader order: names sorted naturally
        sizes = {i: z.getinfo(n).file_size for i, n in enumerate(order)}
        modes = {n: Image.open(io.BytesIO(z.read(n))).mode for n in order}
    root = _check_comicinfo_v2(xml)
    got = {int(p.attrib["Image"]): p.attrib for p in root.iter("Page")}
    assert int(got[0]["ImageSize"]) == sizes[0] and (got[0]["ImageWidth"], got[0]["ImageHeight"]) == ("64", "96"), got
    assert int(got[1]["ImageSize"]) == sizes[1] and got[1]["Key"] == "k" and "ImageWidth" not in got[1], got
    assert "ImageSize" not in got[2] and got[2]["DoublePage"] == "true" and int(got[3]["ImageSize"]) == sizes[3], got
    unsized = lambda x: re.sub(rb"(ImageSize|ImageWidth|ImageHeight)=(['\"])\d+\2", rb"\1=\2\2", x)
    assert unsized(xml) == unsized(COMICINFO.encode())                            # everything else byte for byte
    # no colour added: still gray
    assert modes == {"01.png": "RGB", "02.png": "RGB", "03.png": "RGB", "abs/04.png": "L"}, modes
    lines = [l for l in err.splitlines() if "'../../03.png'" in l]
    assert len(lines) == 1 and "03.png" in lines[0] and "'/abs/04.png'" in lines[0] and "v.cbz" in lines[0], err


def test_gray_page_without_added_colour_stays_gray_and_help_says_the_format(tiny, tmp_path, capsys):
    ("Issue 11.4: a page the model leaves neutral is written as gray (mode L), not RGB of three equal channels; --help "
     "says so.")
    src = tmp_path / "in"; src.mkdir()
    Image.new("L", (64, 96), 255).save(src / "blank.png")
    synth_page(seed=9, index=0, size=(64, 96)).gray.save(src / "p.png")
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "out")
    assert rc == 0, err
    assert Image.open(tmp_path / "out/in/blank.png").mode == "L" and Image.open(tmp_path / "out/in/p.png").mode == "RGB"
    with pytest.raises(SystemExit): cli_main(["colorize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "format" in text and "gray" in text and "RGB" in text, text


def test_skipped_files_in_a_folder_are_said(tiny, tmp_path):
    ("Issue 11.5: a .gif, a dangling link and a link loop in an input folder are each said in one summary line with a "
     "count.")
    src = tmp_path / "in"; (src / "ch1").mkdir(parents=True)
    synth_page(seed=10, index=0, size=(64, 96)).gray.save(src / "ch1" / "p.png")
    Image.new("L", (8, 8)).save(src / "a.gif"); Image.new("L", (8, 8)).save(src / "b.gif")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (src / "ch1" / "loop").symlink_to("..")
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "out")
    assert rc == 0, err
    lines = err.splitlines()
    for words in (("2 file(s)", ".gif"), ("1 broken link", "gone.png"), ("1 link loop", "loop")):
        assert sum(all(w in l for w in words) for l in lines) == 1, (words, err)
    written = [p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert written == [Path("in/ch1/p.png")]


def test_max_pixels_option(tiny, tmp_path):
    "Issue 11.6: --max-pixels N sets the decompression-bomb limit (the message names the option, not a Python global)."
    src = tmp_path / "in"; src.mkdir()
    synth_page(seed=11, index=0, size=(64, 96)).gray.save(src / "p.png")
    with zipfile.ZipFile(src / "v.cbz", "w") as z:
        z.writestr("01.png", _png(synth_page(seed=11, index=1, size=(64, 96)).gray))
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "o1", "--max-pixels", 5000)
    assert rc == 1 and "2 of 2 pages failed" in err and "--max-pixels" in err and "MAX_IMAGE_PIXELS" not in err, err
    assert "p.png" in err and "v.cbz:01.png" in err, err
    rc, err = _cli("colorize", src, "--checkpoint", tiny[1], "--out", tmp_path / "o2", "--max-pixels", 64 * 96)
    assert rc == 0, err


# ---- --precision -------------------------------------------------------------------------------------------------

def test_precision_auto_resolves_and_bf16_page_stays_within_a_few_levels(tmp_path, page):
    ("Colorizer(precision=...): auto resolves per device; a bf16 page differs from the fp32 one by a few gray levels "
     "at most on average.")
    from manga_colorization.train import save_demo_generator
    # a fitted model: a random one's chroma is ~0 and shows nothing
    run = save_demo_generator(tmp_path / "demo", steps=150)
    fp32 = Colorizer(run, device="cpu", precision="fp32")
    assert fp32.G.precision == "fp32" and Colorizer(run, device="cpu").G.precision == resolve_precision("auto", "cpu")
    if not bf16_supported("cpu"): pytest.skip("this CPU has no native bf16 (neither AVX-512 BF16 nor AMX)")
    loaded = load_generator(run)
    bf16 = Colorizer(loaded, device="cpu", precision="bf16")
    # the caller's generator is left as it was
    assert bf16.G.precision == "bf16" and loaded.precision == "fp32"
    a, b = (np.asarray(c.colorize(page.gray), np.int16) for c in (fp32, bf16))
    diff = np.abs(a - b)
    print(f"bf16 vs fp32 page: mean abs diff {diff.mean():.3f} levels, max {diff.max()}, 99.9th percentile "
          f"{np.percentile(diff, 99.9)}")
    assert diff.mean() <= 2 and diff.max() <= 32, (diff.mean(), diff.max())
    raw = [np.asarray(Colorizer(run, device="cpu", precision=p, raw=True).colorize(page.gray),
                      np.int16) for p in ("fp32", "bf16")]
    assert np.abs(raw[0] - raw[1]).mean() <= 2                                            # the network's own RGB too


def test_upscaler_precision(tmp_path):
    ("Upscaler(precision=...): bf16 (channels_last, autocast) gives float32 out, within a few levels of fp32; ONNX "
     "ignores it.")
    from manga_colorization.models import create_model
    from manga_colorization.superres import Upscaler
    torch.manual_seed(0)
    # not just the bilinear skip
    U = create_model("compact", scale=2, width=8).eval(); torch.nn.init.normal_(U.tail.weight, std=0.05)
    save_generator(U, tmp_path / "u", {"scale": 2})
    gray = synth_page(seed=1, index=0, size=(96, 80)).color.convert("L")
    up32 = Upscaler(tmp_path / "u", precision="fp32")
    assert up32.G.precision == "fp32" and Upscaler(tmp_path / "u").G.precision == resolve_precision("auto", "cpu")
    if not bf16_supported("cpu"): pytest.skip("this CPU has no native bf16 (neither AVX-512 BF16 nor AMX)")
    up16 = Upscaler(tmp_path / "u", precision="bf16")
    a, b = (np.asarray(u.upscale(gray), np.int16) for u in (up32, up16))
    diff = np.abs(a - b)
    print(f"upscaler bf16 vs fp32: mean abs diff {diff.mean():.3f} levels, max {diff.max()}")
    assert up16.G.precision == "bf16" and a.shape == b.shape and diff.mean() <= 2, (diff.mean(), diff.max())


def test_precision_flag_and_bf16_without_bf16_units(tiny, tmp_path, monkeypatch, capsys, page):
    ("colorize / upscale --precision: in the help (with the ONNX note); bf16 where the device has none is one clear "
     "error line.")
    import manga_colorization.core as core
    for command in ("colorize", "upscale"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit): cli_main([command, "--help"])
        text = " ".join(out.getvalue().split())
        assert "--precision {auto,fp32,bf16}" in text and "ONNX backend always runs fp32" in text, command
    page.gray.save(tmp_path / "p.png")
    monkeypatch.setattr(core, "bf16_supported", lambda device: False)
    rc = cli_main(["colorize", str(tmp_path / "p.png"), "--checkpoint", str(tiny[1]), "--out", str(tmp_path / "out"),
                   "--device", "cpu",
                   "--precision", "bf16"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no bf16 support" in err and "--precision fp32" in err, err
    assert not (tmp_path / "out" / "p.png").exists()
    # auto falls back to fp32 there
    assert Colorizer(tiny[1], device="cpu").G.precision == "fp32"
