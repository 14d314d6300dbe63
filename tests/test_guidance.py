"""Guidance (issue 14) through the installed package: every generator variant takes hints, a palette or both and trains
a step; `mangacolor train --guidance` writes a guided run that resumes exactly; `mangacolor colorize
--hints/--reference` and `Colorizer.colorize(hints=, palette=)` agree, on files, folders and CBZ pages, through
PyTorch and ONNX; bad hint files and references are one line naming the file."""
import dataclasses
import io
import json
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.cli import main
from manga_colorization.colorize import Colorizer
from manga_colorization.core import UserError
from manga_colorization.guidance import (HintPoint, Hints, augmented_reference, reference_warp, transfer_colors,
                                         write_hints)
from manga_colorization.models import list_models, make_generator, save_generator
from manga_colorization.runs import Run, load_checkpoint, load_generator
from manga_colorization.train import GANStep, TrainConfig, setup_device, train

TINY = dict(size=32, width=8, depth=3, batch_size=4, epochs=1, limit=8, val_limit=4, device="cpu", pretrained=False,
            d_width=8, d_layers=2, samples=2, tensorboard=False, out_ch=2)
META = {"size": 64, "input_mode": "gray", "out_ch": 2, "color_space": "lab"}


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("guidance", ["hints", "palette", "both"])
@pytest.mark.parametrize("arch", list_models("colorize"))
def test_every_variant_trains_a_guided_step(arch, guidance):
    cfg = TrainConfig(**{**TINY, "arch": arch, "guidance": guidance, "hue_rotate": 1.0, "hint_none": 0.0,
                         "palette_none": 0.0,
                         "gen_options": {"ext_size": 32} if "ext" in arch else None})
    step = GANStep(cfg, setup_device(cfg))
    assert step.G.config["guidance"] == guidance
    assert step.G.use_hints == (guidance != "palette") and step.G.use_palette == (guidance != "hints")
    # TrainConfig.hint_pyramid: hints at every encoder level
    assert step.G.hint_pyramid == (guidance != "palette")
    before = [p.detach().clone() for p in step.G.parameters() if p.requires_grad]
    terms = step(torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1)
    assert terms["ok"] and np.isfinite(terms["loss_g"])
    assert any(not torch.equal(a, b) for a, b in zip(before, [p for p in step.G.parameters() if p.requires_grad]))
    # the palette path gets a gradient (its last layer starts at zero, so its weight moves first)
    if guidance != "hints":
        assert step.G.film.mlp[-1].weight.abs().sum() > 0


@pytest.mark.parametrize("arch", list_models("colorize"))
def test_study_hint_generators_train_and_do_not_depend_on_the_batch(arch, tmp_path):
    ("The guided study's hints model (GroupNorm, hints spread over the gray as input and as the base of the output): "
     "every variant "
     "trains a hinted step, and in use an image's output is its own, as in ONNX at any size.")
    cfg = TrainConfig(**{**TINY, "arch": arch, "guidance": "hints", "hue_rotate": 1.0, "hint_none": 0.0,
                         "gen_options": {"norm": "group", "hint_spread": True, "hint_residual": True,
                                         **({"ext_size": 32} if "ext" in arch else {})}})
    step = GANStep(cfg, setup_device(cfg))
    assert step.G.config["norm"] == "group" and any(isinstance(m, torch.nn.GroupNorm) for m in step.G.modules())
    assert step.G.hint_spread and step.G.hint_residual and step.G.downs[0][0].in_channels == 1 + 3 + 3
    # the Danbooru extractor keeps its own (frozen) BatchNorm
    own = [m for name, m in step.G.named_modules() if not name.startswith("extractor")]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in own)
    terms = step(torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1)
    assert terms["ok"] and np.isfinite(terms["loss_g"])
    G = step.G
    x, hints = torch.rand(3, 1, 32, 32) * 2 - 1, torch.zeros(3, 3, 32, 32)
    hints[0, :2, 5:9, 5:9], hints[0, 2, 5:9, 5:9] = 0.5, 1                     # hints on the first image only
    G.train()
    frozen = {id(m) for m in G.extractor.modules()} if G.extractor is not None else set()
    for m in G.modules():
        # dropout off, the norms in training mode
        if isinstance(m, torch.nn.Dropout) or id(m) in frozen: m.eval()
    with torch.no_grad(): training, alone = G(x, hints), G(x[1:], hints[1:])
    G.eval()
    with torch.no_grad(): use = G(x, hints)
    # no running statistics: training and use agree
    assert torch.allclose(training, use, atol=1e-5)
    # and an image's output never sees the rest of its batch
    assert torch.allclose(training[1:], alone, atol=1e-5)
    assert not torch.allclose(use[0], G(x[:1], torch.zeros(1, 3, 32, 32)).detach()[0], atol=1e-3)   # the hints do act
    if arch == "unet":
        save_generator(G, tmp_path / "g", META)
        rc, _, err = _cli(["export", "--checkpoint", tmp_path / "g", "--onnx", "--out", tmp_path / "g.onnx"])
        assert rc == 0, err
        onnx, torch_g = load_generator(tmp_path / "g.onnx"), load_generator(tmp_path / "g")
        assert (onnx(x, hints) - torch_g(x, hints)).abs().max() < 1e-4
        # another size, padded to the multiple inside
        wide, wide_hints = torch.rand(2, 1, 40, 72) * 2 - 1, torch.zeros(2, 3, 40, 72)
        wide_hints[:, 1, 30:33, 60:63], wide_hints[:, 2, 30:33, 60:63] = -0.6, 1
        assert (onnx(wide, wide_hints) - torch_g(wide, wide_hints)).abs().max() < 1e-4


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    "A tiny guided training run through the CLI (1 epoch of 8 synthetic images)."
    out = tmp_path_factory.mktemp("train") / "guided"
    rc, stdout, err = _cli(["train", "--out", out, "--size", 32, "--width", 8, "--depth", 3, "--batch-size", 4,
                            "--epochs", 1,
                            "--limit", 8, "--val-limit", 4, "--device", "cpu", "--no-pretrained", "--d-width", 8,
                                "--d-layers", 2,
                            "--out-ch", 2, "--no-tensorboard", "--guidance", "both", "--val-hints", 5])
    assert rc == 0, err[-2000:]
    return out


def test_train_cli_writes_a_guided_run(guided_run):
    G = load_generator(guided_run)
    assert (G.guidance, G.uses_hints, G.uses_palette, G.palette_k) == ("both", True, True, 8)
    assert G.meta["guidance"] == "both" and G.meta["val_hints"] == 5
    config = Run(guided_run).config
    # the guidance's defaults, recorded as resolved
    got = (config["guidance"], config["hue_rotate"], config["hint_mean"], config["palette_none"])
    assert got == ("both", 1.0, 16.0, 0.5)
    sheet = Image.open(Run(guided_run).sample_path(1)).convert("RGB")
    assert sheet.width == 3 * 32


def test_train_cli_rejects_a_bad_guidance(tmp_path):
    with pytest.raises(SystemExit) as e, redirect_stderr(io.StringIO()) as err:
        main(["train", "--out", str(tmp_path / "x"), "--guidance", "colour"])
    assert e.value.code == 2 and "choose none, hints, palette or both" in err.getvalue()


def test_guided_training_resumes_exactly(tmp_path):
    ("Guidance is sampled from the RNG the checkpoint saves: 1 + 1 epochs (resumed) give the weights of 2 epochs in "
     "one go.")
    base = {**TINY, "guidance": "both", "hint_mean": 4.0}
    train(TrainConfig(**{**base, "out": str(tmp_path / "one"), "epochs": 2}))
    train(TrainConfig(**{**base, "out": str(tmp_path / "two"), "epochs": 1}))
    train(TrainConfig(**{**base, "out": str(tmp_path / "two"), "epochs": 2}), resume=True)
    a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["G"] for r in ("one", "two"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def guided_generator(tmp_path_factory):
    "A saved guided generator (random weights, its FiLM switched on, hints at every encoder level) and its ONNX export."
    torch.manual_seed(0)
    G = make_generator("unet", width=8, depth=4, out_ch=2, guidance="both", hint_pyramid=True)
    torch.nn.init.normal_(G.film.mlp[-1].weight, std=0.2)
    # hint channels strong enough to show after rounding
    with torch.no_grad(): G.downs[0][0].weight[:, 1:] *= 100
    root = tmp_path_factory.mktemp("gen")
    save_generator(G, root / "g", META)
    rc, _, err = _cli(["export", "--checkpoint", root / "g", "--onnx", "--out", root / "g.onnx"])
    assert rc == 0, err
    return root


def _page(path: Path, value: int = 150, size=(120, 168)) -> Path:
    Image.new("L", size, value).save(path)
    return path


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float32)


def test_colorize_api_and_cli_agree_with_hints_and_reference(guided_generator, tmp_path):
    page, ref = _page(tmp_path / "p.png"), tmp_path / "cover.png"
    Image.new("RGB", (40, 40), (40, 160, 60)).save(ref)
    hints = Hints([HintPoint(60, 80, (220, 40, 40), 10)])
    write_hints(hints, tmp_path / "h.json")
    col = Colorizer(guided_generator / "g", device="cpu", keep_white=False)
    plain, hinted = np.asarray(col.colorize(page),
                               np.float32), np.asarray(col.colorize(page, hints=hints, palette=ref), np.float32)
    assert np.abs(plain - hinted).max() > 2                                   # guidance changes the page
    rc, _, err = _cli(["colorize", page, "--checkpoint", guided_generator / "g", "--out", tmp_path / "out",
                       "--no-keep-white",
                       "--device", "cpu", "--hints", tmp_path / "h.json", "--reference", ref])
    assert rc == 0, err
    assert np.abs(_pixels(tmp_path / "out" / "p.png") - hinted).max() <= 1    # the CLI gives what the API gives
    rc, _, err = _cli(["colorize", page, "--checkpoint", guided_generator / "g.onnx", "--out", tmp_path / "onnx",
                       "--no-keep-white",
                       "--hints", tmp_path / "h.json", "--reference", ref])
    assert rc == 0, err
    assert np.abs(_pixels(tmp_path / "onnx" / "p.png") - hinted).mean() < 0.5   # and so does ONNX Runtime


def test_reference_palette_file_equals_its_colours(guided_generator, tmp_path):
    page = _page(tmp_path / "p.png")
    (tmp_path / "pal.json").write_text(json.dumps({"palette": ["#d03030", "#f0d0b0"]}))
    col = Colorizer(guided_generator / "g", device="cpu", keep_white=False)
    a = np.asarray(col.colorize(page, palette=tmp_path / "pal.json"))
    b = np.asarray(col.colorize(page, palette=["#d03030", (240, 208, 176)]))
    c = np.asarray(col.colorize(page, hints={"palette": ["#d03030", "#f0d0b0"]}))   # a hint file's palette is used too
    assert np.array_equal(a, b) and np.array_equal(a, c) and not np.array_equal(a, np.asarray(col.colorize(page)))


def test_hint_folder_reaches_cbz_pages_by_member_stem(guided_generator, tmp_path):
    pages = {}
    for name in ("001.png", "002.png"):
        buf = io.BytesIO(); Image.new("L", (120, 168), 150).save(buf, "PNG"); pages[name] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "ch.cbz", "w") as z:
        for n, d in pages.items(): z.writestr(n, d)
    (tmp_path / "hints").mkdir()
    write_hints(Hints([HintPoint(60, 80, (220, 40, 40), 20)]), tmp_path / "hints" / "001.hints.json")
    rc, _, err = _cli(["colorize", tmp_path / "ch.cbz", "--checkpoint", guided_generator / "g", "--out",
                       tmp_path / "out",
                       "--no-keep-white", "--device", "cpu", "--hints", tmp_path / "hints"])
    assert rc == 0, err
    with zipfile.ZipFile(tmp_path / "out" / "ch.cbz") as z:
        one, two = (np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB"),
                               np.float32) for n in ("001.png", "002.png"))
    assert np.abs(one - two).max() > 2                                         # only page 001 had hints


def test_bad_hints_and_references_are_one_line(guided_generator, tmp_path):
    page = _page(tmp_path / "p.png")
    (tmp_path / "bad.json").write_text('{"points": [{"x": 5, "y": "top", "color": "#fff"}]}')
    rc, _, err = _cli(["colorize", page, "--checkpoint", guided_generator / "g", "--out", tmp_path / "o1", "--hints",
                       tmp_path / "bad.json"])
    assert rc == 1 and f"{tmp_path / 'bad.json'}: points[0].y: 'top' is not a number" in err
    rc, _, err = _cli(["colorize", page, "--checkpoint", guided_generator / "g", "--out", tmp_path / "o2",
                       "--reference", tmp_path / "none.png"])
    assert rc == 2 and "none.png" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(["colorize", page, "--checkpoint", guided_generator / "g", "--out", tmp_path / "o3", "--hints",
                       tmp_path / "nowhere"])
    assert rc == 2 and "--hints" in err and "nowhere" in err
    unguided = tmp_path / "plain"
    save_generator(make_generator("unet", width=8, depth=4, out_ch=2), unguided, META)
    rc, _, err = _cli(["colorize", page, "--checkpoint", unguided, "--out", tmp_path / "o4", "--reference",
                       tmp_path / "bad.json"])
    assert rc == 2 and "trained without" in err
    with pytest.raises(UserError, match="trained without hints"):
        Colorizer(unguided, device="cpu").colorize(page, hints=[HintPoint(1, 1, (255, 0, 0))])


def test_sidecars_beside_pages_are_found_and_unusable_parts_said_once(guided_generator, tmp_path):
    (tmp_path / "in").mkdir()
    for n in ("a", "b"): _page(tmp_path / "in" / f"{n}.png")
    write_hints(Hints([HintPoint(60, 80, (220, 40, 40), 20)]), tmp_path / "in" / "a.hints.json")
    rc, _, err = _cli(["colorize", tmp_path / "in", "--checkpoint", guided_generator / "g", "--out", tmp_path / "out",
                       "--no-keep-white", "--device", "cpu"])
    assert rc == 0, err
    a, b = (_pixels(tmp_path / "out" / "in" / f"{n}.png") for n in ("a", "b"))
    assert np.abs(a - b).max() > 2
    G = make_generator("unet", width=8, depth=4, out_ch=2, guidance="palette")
    save_generator(G, tmp_path / "palonly", META)
    write_hints(Hints([HintPoint(60, 80, (220, 40, 40), 20)]), tmp_path / "in" / "b.hints.json")
    rc, _, err = _cli(["colorize", tmp_path / "in", "--checkpoint", tmp_path / "palonly", "--out", tmp_path / "out2",
                       "--device", "cpu"])
    assert rc == 0 and err.count("points are ignored") == 1, err


def test_unguided_models_and_upscaling_ignore_sidecars(guided_generator, tmp_path):
    ("A hint file beside a page (even a broken one) does not stop an unguided colorizer or `mangacolor upscale`: it is "
     "said once and ignored.")
    (tmp_path / "in").mkdir()
    for n in ("a", "b"):
        _page(tmp_path / "in" / f"{n}.png")
        (tmp_path / "in" / f"{n}.hints.json").write_text('{"points": [{"x": 1, "y": 2, "color": "rouge"}]}')
    save_generator(make_generator("unet", width=8, depth=4, out_ch=2), tmp_path / "plain", META)
    rc, _, err = _cli(["colorize", tmp_path / "in", "--checkpoint", tmp_path / "plain", "--out", tmp_path / "out",
                       "--device", "cpu"])
    assert rc == 0 and err.count("takes no guidance") == 1, err
    assert sorted(p.name for p in (tmp_path / "out" / "in").iterdir()) == ["a.png", "b.png"]


def _rgb(n, size, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _smooth(x):
    "Smooth noise (a blurred random image), so a warp moves structures rather than independent pixels."
    return torch.nn.functional.avg_pool2d(x, 5, 1, 2).mul(2).clamp(-1, 1)


def test_augmented_reference_is_deterministic_and_moves_pixels():
    rgb = _smooth(_rgb(2, 32))
    ref = augmented_reference(rgb, torch.Generator().manual_seed(5))
    assert ref.shape == rgb.shape and ref.min() >= -1 and ref.max() <= 1
    assert torch.equal(ref, augmented_reference(rgb, torch.Generator().manual_seed(5)))
    assert not torch.equal(ref, rgb) and (ref == 1).float().mean() > 0.01                    # moved; parts are paper
    grid = reference_warp(2, (32, 48), torch.Generator().manual_seed(1))
    assert grid.shape == (2, 32, 48, 2)
    assert torch.equal(grid, reference_warp(2, (32, 48), torch.Generator().manual_seed(1)))


def test_transfer_colors_shapes_gray_reference_and_per_image():
    gray = _rgb(2, 24, 1).mean(1, keepdim=True)
    refs = _rgb(2, 20, 2)
    out = transfer_colors(gray, refs, samples=200)
    assert out.shape == (2, 3, 24, 24) and out.min() >= -1 and out.max() <= 1
    pooled = transfer_colors(gray, [refs[0], [refs[1][:, :10], refs[1][:, 10:]]], samples=200)   # 2 pictures, 1 image
    assert pooled.shape == (2, 3, 24, 24)
    no_colour = transfer_colors(gray, gray.expand(-1, 3, -1, -1).flip(-2), samples=200)   # a gray reference
    torch.testing.assert_close(no_colour, gray.expand(-1, 3, -1, -1), atol=2e-3, rtol=0)
    red = torch.tensor([0.8, -0.6, -0.6]).view(3, 1, 1).expand(3, 16, 16)
    blue = torch.tensor([-0.6, -0.6, 0.8]).view(3, 1, 1).expand(3, 16, 16)
    both = transfer_colors(gray, [red, blue], samples=100)                          # each image its own reference
    assert (both[0, 0] > both[0, 2]).float().mean() > 0.9 and (both[1, 2] > both[1, 0]).float().mean() > 0.9
    alone = transfer_colors(gray, [red, red], samples=100)
    torch.testing.assert_close(both[0], alone[0])
    with pytest.raises(UserError, match="1 entries for 2 images"): transfer_colors(gray, [red])
