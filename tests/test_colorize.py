import contextlib
import io
import re
import struct
import zipfile
from pathlib import Path
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.cli import main as cli_main
from manga_colorization.colorize import (Colorizer, OnnxRunner, ZipLimits, check_zip, chroma_to_page, export_onnx, is_color_page,
                                         measure_page_memory, plan_outputs, read_member, recombine, safe_member_name, working_geometry)
from manga_colorization.core import UserError, default_device, img2tensor, rgb_to_gray, rgb_to_ycbcr, seed_everything
from manga_colorization.models import make_generator, save_generator
from manga_colorization.synthetic import synth_page


class ToyTint(torch.nn.Module):
    "A stand-in generator with a known answer: dark gray becomes blue, light gray orange."
    config = {"name": "toy_tint", "in_ch": 1, "depth": 0}
    def forward(self, x):
        t = (x + 1) / 2
        return torch.cat([0.25 + 0.75 * t, 0.15 + 0.6 * t, 0.85 - 0.7 * t], 1) * 2 - 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny UNet fitted for a few steps to synthetic pages (visible colour), saved as a run folder: (G, folder)."
    seed_everything(0)
    G = make_generator("unet", width=8, depth=4)
    color = torch.stack([img2tensor(synth_page(seed=9, index=i, size=(128, 128)).color.resize((64, 64), Image.BOX)) for i in range(4)])
    opt = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], 3e-3)
    G.train()
    for _ in range(60):
        loss = (G(rgb_to_gray(color)) - color).abs().mean(); opt.zero_grad(); loss.backward(); opt.step()
    G.eval()
    run = tmp_path_factory.mktemp("run")
    save_generator(G, run, {"size": 64, "input_mode": "gray", "out_ch": 3, "color_space": "rgb"})
    return G, run


@pytest.fixture(scope="module")
def page():
    return synth_page(seed=0, index=0, size=(160, 224))


def chroma(img):
    return rgb_to_ycbcr(torch.from_numpy(np.asarray(img.convert("RGB"), np.float32) / 255).permute(2, 0, 1))[1:].numpy()


def luma_error(out, gray):
    return int(np.abs(np.asarray(out.convert("L"), np.int16) - np.asarray(gray, np.int16)).max())


def test_working_geometry():
    assert working_geometry(1654, 2339, 512) == ((362, 512), 512)
    assert working_geometry(100, 50, 64, 16) == ((64, 32), 64)


def test_recombine_keeps_luma_and_scales_chroma_into_gamut():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    rgb = recombine(gray, rng.normal(0, 0.5, (2, 32, 32)).astype(np.float32))
    assert np.abs(np.asarray(Image.fromarray(rgb).convert("L"), np.int16) - gray).max() <= 1
    assert np.ptp(rgb.astype(int), axis=2)[gray == 0].max() == 0 and np.ptp(rgb.astype(int), axis=2)[gray == 255].max() == 0


def test_from_checkpoint_full_resolution_keeps_luminance(tiny, page):
    col = Colorizer.from_checkpoint(tiny[1], device="cpu")
    assert (col.size, col.multiple) == (64, 16)
    out = col.colorize(page.gray)
    assert out.size == page.gray.size and out.mode == "RGB"
    assert luma_error(out, page.gray) <= 1
    assert np.abs(chroma(out)).mean() * 255 > 1.5           # and it is coloured


def test_from_checkpoint_accepts_training_pt(tiny, tmp_path, page):
    G, _ = tiny
    torch.save({"generator": G.state_dict(), "generator_config": G.config, "meta": {"size": 64}}, tmp_path / "last.pt")
    col = Colorizer.from_checkpoint(tmp_path / "last.pt", device="cpu")
    assert np.array_equal(np.asarray(col.colorize(page.gray)), np.asarray(Colorizer(G, {"size": 64}, device="cpu").colorize(page.gray)))


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"): Colorizer.from_checkpoint(tmp_path / "nope.pt")


def test_device_auto(tiny):
    assert Colorizer(tiny[0], {"size": 64}).device.type == default_device().type


def test_raw_is_network_rgb_at_page_size(tiny, page):
    out = Colorizer(tiny[0], {"size": 64}, device="cpu", raw=True).colorize(page.gray)
    assert out.size == page.gray.size and luma_error(out, page.gray) > 10


@pytest.mark.parametrize("factor", [1.5, 2.0])
def test_colours_do_not_depend_on_page_size(tiny, page, factor):
    col = Colorizer(tiny[0], {"size": 64}, device="cpu")
    base = col.colorize(page.gray)
    big = page.gray.resize((round(page.gray.width * factor), round(page.gray.height * factor)), Image.BICUBIC)
    back = col.colorize(big).resize(page.gray.size, Image.BOX)
    assert np.abs(chroma(back) - chroma(base)).mean() * 255 < 2.0


def test_strips_give_the_same_page(tiny, page):
    a = Colorizer(tiny[0], {"size": 64}, device="cpu").colorize(page.gray)
    b = Colorizer(tiny[0], {"size": 64}, device="cpu", strip_pixels=page.gray.width * 2).colorize(page.gray)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_peak_memory_subprocess_small_page(tiny):
    line = measure_page_memory(tiny[1], 300, 420, strip_pixels=300 * 3, working_size=64)
    assert line.startswith("300x420:") and "peak RSS" in line


def test_edge_lands_on_page_edge():
    edge = np.full((40, 80), 200, np.uint8); edge[:, 37:] = 90
    img = Image.fromarray(edge)
    guide = np.asarray(img.resize((10, 5), Image.LANCZOS), np.float32) / 255
    ch = np.where(guide < 0.6, np.float32(0.15), np.float32(-0.15))[None].repeat(2, 0) * np.array([-1, 1], np.float32)[:, None, None]
    up = np.asarray(chroma_to_page(Image.new("RGB", (80, 40)), img, guide, ch, keep_white=False)).astype(int)
    cr = (up[..., 0] - up[..., 1])[20]
    assert cr[30:37].max() < -5 and cr[37:44].min() > 5


def test_keep_white_and_ink_neutral(page):
    scan = Image.fromarray((np.asarray(page.gray, np.float32) * 0.97).astype(np.uint8))
    g = np.asarray(scan)
    inside = np.zeros(g.shape, bool)
    for x0, y0, x1, y1 in page.bubbles: inside[y0:y1, x0:x1] = True
    bubble_white = inside & (g >= 235)
    assert bubble_white.sum() > 20
    kept = np.asarray(Colorizer(ToyTint(), {"size": 64}, device="cpu").colorize(scan)).astype(int)
    assert np.ptp(kept, axis=2)[(g >= 235) | (g <= 30)].max() <= 1
    core = np.zeros(g.shape, bool)   # the middle of each bubble, lettering (any gray level) included
    for x0, y0, x1, y1 in page.bubbles:
        dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
        core[y0 + dy:y1 - dy, x0 + dx:x1 - dx] = True
    assert (core & (g > 30) & (g < 200)).sum() > 5 and np.ptp(kept, axis=2)[core].max() <= 1
    tinted = np.asarray(Colorizer(ToyTint(), {"size": 64}, device="cpu", keep_white=False).colorize(scan)).astype(int)
    assert np.ptp(tinted, axis=2)[bubble_white].mean() > 3
    low = np.asarray(Colorizer(ToyTint(), {"size": 64}, device="cpu", white_threshold=200).colorize(scan)).astype(int)
    assert np.ptp(low, axis=2)[g >= 200].max() <= 1


def test_colour_pages_pass_through(page):
    col = Colorizer(ToyTint(), {"size": 64}, device="cpu")
    assert is_color_page(page.color) and not is_color_page(page.gray.convert("RGB"))
    assert np.array_equal(np.asarray(col.colorize(page.color)), np.asarray(page.color.convert("RGB")))
    forced = Colorizer(ToyTint(), {"size": 64}, device="cpu", color_threshold=None).colorize(page.color)
    assert not np.array_equal(np.asarray(forced), np.asarray(page.color.convert("RGB")))
    tinted_paper = Image.new("RGB", (64, 64), (245, 235, 210))
    assert not is_color_page(tinted_paper)


def test_batch_matches_single(tiny, page):
    col = Colorizer(tiny[0], {"size": 64}, device="cpu")
    other = synth_page(seed=0, index=1, size=(200, 140)).gray
    a, b = col.colorize_batch([page.gray, other])
    assert np.array_equal(np.asarray(a), np.asarray(col.colorize(page.gray)))
    assert np.abs(np.asarray(b, np.int16) - np.asarray(col.colorize(other), np.int16)).max() <= 1


def test_panels_mode(tiny, page):
    col = Colorizer(tiny[0], {"size": 64}, device="cpu", panels=True)
    assert len(col.regions(page.gray)) >= 2
    assert luma_error(col.colorize(page.gray), page.gray) <= 1


@pytest.mark.parametrize("name,safe", [("../../etc/passwd", "etc/passwd"), ("/abs/p.png", "abs/p.png"),
                                       ("C:\\x\\..\\p.png", "x/p.png"), ("a/./D:b.png", "a/b.png"), ("..", None)])
def test_safe_member_name(name, safe):
    assert safe_member_name(name) == safe


def test_zip_bomb_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z: z.writestr("a.png", bytes(8 << 20))
    with zipfile.ZipFile(buf) as z:
        with pytest.raises(UserError, match="zip bomb"): check_zip(z, "x.cbz")
        with pytest.raises(UserError, match="uncompressed"): check_zip(z, "x.cbz", ZipLimits(max_total=1 << 20, max_ratio=1e9))


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


def test_plan_refuses_to_overwrite_inputs(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(UserError, match="would overwrite the input"): plan_outputs([tmp_path / "a.png"], tmp_path)
    jobs = plan_outputs([tmp_path], tmp_path.parent / (tmp_path.name + "-out"))
    assert [j.dst for j in jobs] == [tmp_path.parent / (tmp_path.name + "-out") / tmp_path.name / "a.png"]


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


def test_onnx_export_matches_torch(tiny, tmp_path, page):
    pytest.importorskip("onnxruntime")
    G, run = tiny
    rc, _ = _cli("export", "--onnx", "--checkpoint", run, "--out", tmp_path / "g.onnx")
    assert rc == 0 and (tmp_path / "g.json").exists()
    runner = OnnxRunner(tmp_path / "g.onnx")
    for shape in ((1, 1, 64, 64), (2, 1, 32, 48)):
        x = torch.rand(shape) * 2 - 1
        with torch.no_grad(): ref = G(x)
        assert torch.allclose(runner(x.numpy()), ref, atol=1e-4)
    ref_page = np.asarray(Colorizer(G, {"size": 64}, device="cpu").colorize(page.gray), np.int16)
    onnx_page = np.asarray(Colorizer.from_checkpoint(tmp_path / "g.onnx").colorize(page.gray), np.int16)
    assert np.abs(onnx_page - ref_page).max() <= 1


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


def test_export_onnx_in_memory(tiny):
    pytest.importorskip("onnxruntime")
    buf = io.BytesIO(); export_onnx(tiny[0], buf, size=32)
    assert len(buf.getvalue()) > 1000


def test_transparency_goes_on_white_and_path_constructor(tiny):
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0)); rgba.paste((20, 20, 20, 255), (8, 8, 30, 30))
    out = np.asarray(Colorizer(ToyTint(), {"size": 64}, device="cpu").colorize(rgba))
    assert tuple(out[40, 60]) == (255, 255, 255) and tuple(out[20, 20]) == (20, 20, 20)
    col = Colorizer(tiny[1], device="cpu")          # a checkpoint path works too (as gallery uses it)
    assert col.size == 64 and col(rgba).size == rgba.size


def test_onnx_attention_variant_dynamic_shapes():
    pytest.importorskip("onnxruntime")
    G = make_generator("unet_att", width=8, depth=4).eval()
    buf = io.BytesIO(); export_onnx(G, buf, size=32)
    runner = OnnxRunner(buf.getvalue())
    for shape in ((1, 1, 32, 32), (2, 1, 48, 64)):
        x = torch.rand(shape) * 2 - 1
        with torch.no_grad(): ref = G(x)
        assert torch.allclose(runner(x.numpy()), ref, atol=1e-4)


def test_sketch_models_see_lines(page):
    out = Colorizer(ToyTint(), {"size": 64, "input_mode": "sketch"}, device="cpu").colorize(page.gray)
    assert luma_error(out, page.gray) <= 1
    assert not np.array_equal(np.asarray(out), np.asarray(Colorizer(ToyTint(), {"size": 64}, device="cpu").colorize(page.gray)))


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
