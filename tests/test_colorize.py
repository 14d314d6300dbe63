"""`colorize`'s contracts that its notebook cannot show: the `mangacolor colorize` / `export` command lines (exit codes, never
overwriting, archives, real-world files, the progress bar on a terminal) and the ways a `Colorizer` is given its generator."""
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
from manga_colorization.colorize import Colorizer, check_zip, read_member, recombine
from manga_colorization.core import UserError, default_device
from manga_colorization.models import make_generator, save_generator
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
    assert np.ptp(rgb.astype(int), axis=2)[gray == 0].max() == 0 and np.ptp(rgb.astype(int), axis=2)[gray == 255].max() == 0


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
    ref = np.asarray(Colorizer(tiny[1], device="cpu").colorize(page.gray), np.int16)
    assert np.abs(np.asarray(col.colorize(page.gray), np.int16) - ref).max() <= 1


def test_missing_checkpoint_or_wrong_generator_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="nope.pt"): Colorizer(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="unknown backend"): Colorizer(tmp_path, backend="tf")
    with pytest.raises(TypeError, match="LoadedGenerator"): Colorizer(torch.nn.Identity())


def test_device_auto(tiny):
    assert Colorizer(tiny[0], {"size": 64}).device.type == default_device().type


def _lying_zip(method, crc_too=False):
    "A one-member zip whose central directory declares 10 bytes for a 4000-byte member (and, with crc_too, the CRC of those 10)."
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
        if method == zipfile.ZIP_DEFLATED and crc_too:                            # zipfile stops at the declared size: bounded
            assert len(read_member(z, info, "liar.cbz")) == 10
            return
        with pytest.raises(UserError, match=r"liar.cbz: member '001.png' is larger than it declares"): read_member(z, info, "liar.cbz")


def test_lying_archive_in_a_batch_is_reported(tiny, tmp_path):
    (tmp_path / "liar.cbz").write_bytes(_lying_zip(zipfile.ZIP_DEFLATED))
    rc, err = _cli("colorize", tmp_path / "liar.cbz", "--checkpoint", tiny[1], "--out", tmp_path / "out")
    assert rc == 1 and "1 of 1 pages failed" in err and "is larger than it declares" in err and not (tmp_path / "out/liar.cbz").exists(), err


@pytest.mark.parametrize("pages,out", [("book", "book"), ("book/ch1", "book")])
def test_input_folder_and_out_folder_nested_is_a_clear_error(tiny, tmp_path, pages, out):
    (tmp_path / "book" / "ch1").mkdir(parents=True)
    synth_page(seed=1, index=0, size=(64, 64)).gray.save(tmp_path / "book" / "ch1" / "p1.png")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc, err = _cli("colorize", tmp_path / pages, "--checkpoint", tiny[1], "--out", tmp_path / out)
    assert rc == 2 and err.count("\n") == 1 and "no images" not in err, err
    assert str(tmp_path / pages) in err and str(tmp_path / out) in err and "inside" in err and "choose another --out folder" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before    # nothing written


def test_out_folder_inside_the_input_folder_is_never_read_back(tiny, tmp_path):
    (tmp_path / "book" / "ch1").mkdir(parents=True)
    synth_page(seed=1, index=0, size=(64, 64)).gray.save(tmp_path / "book" / "ch1" / "p1.png")
    for attempt in range(2):        # the second run must not take the first run's outputs for new pages
        rc, err = _cli("colorize", tmp_path / "book", "--checkpoint", tiny[1], "--out", tmp_path / "book" / "colored")
        assert rc == 0, err
    outputs = sorted(p.relative_to(tmp_path / "book" / "colored") for p in (tmp_path / "book" / "colored").rglob("*.png"))
    assert outputs == [Path("book/ch1/p1.png")], outputs


def test_progress_bar_on_a_terminal(tiny, tmp_path):
    "`mangacolor colorize` on a folder draws a tqdm bar (pages done / total) on stderr when stderr is a terminal."
    src = tmp_path / "in"; src.mkdir()
    for i in range(3): synth_page(seed=6, index=i, size=(64, 96)).gray.save(src / f"p{i}.png")
    leader, follower = pty.openpty()
    r = subprocess.run(["mangacolor", "colorize", str(src), "--checkpoint", str(tiny[1]), "--out", str(tmp_path / "out"), "--device", "cpu"],
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
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): rc = cli_main([str(a) for a in argv])
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
    assert rc == 0 and "failed" not in err, err                                 # nothing failed (the page is skipped): 0
    with pytest.raises(SystemExit) as e: cli_main(["colorize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "exit status: 0" in text and "1 some pages failed" in text and "N of M pages failed' is on stderr" in text
    assert "2 usage or user error" in text


def test_export_refuses_existing_files_and_checkpoint_files(tiny, tmp_path):
    pytest.importorskip("onnx")
    G, _ = tiny
    run = tmp_path / "run"
    save_generator(G, run, {"size": 64})
    torch.save({"generator": G.state_dict(), "generator_config": G.config, "meta": {"size": 64}}, tmp_path / "last.pt")
    cfg = (run / "generator.json").read_bytes()
    for ckpt in (run, run / "generator.safetensors", run / "generator.json"):     # the sidecar would be the checkpoint's own .json
        rc, err = _cli("export", "--onnx", "--checkpoint", ckpt, "--out", run / "generator.onnx", "--overwrite")
        assert rc == 2 and "a file of the checkpoint" in err and err.count("\n") == 1, err
    rc, err = _cli("export", "--onnx", "--checkpoint", tmp_path / "last.pt", "--out", tmp_path / "last.onnx")
    assert rc == 0, err
    (tmp_path / "link.onnx").symlink_to(tmp_path / "last.pt")                  # the .onnx path itself is the checkpoint (via a link)
    rc, err = _cli("export", "--onnx", "--checkpoint", tmp_path / "last.pt", "--out", tmp_path / "link.onnx", "--overwrite")
    assert rc == 2 and "a file of the checkpoint" in err, err
    assert (run / "generator.json").read_bytes() == cfg and not (run / "generator.onnx").exists()
    onnx_bytes = (tmp_path / "last.onnx").read_bytes()
    rc, err = _cli("export", "--onnx", "--checkpoint", run, "--out", tmp_path / "last.onnx")
    assert rc == 2 and "exists" in err and "--overwrite" in err and (tmp_path / "last.onnx").read_bytes() == onnx_bytes, err
    (tmp_path / "only.json").write_text("{}")                                    # an existing sidecar alone is refused too
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
    "CMYK JPEG, palette PNG with transparency, 16-bit gray PNG, a truncated JPEG: decoded by data.load_image; the bad one is counted."
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
