"""Reference-based colorization (issue 22) through the installed package: every generator variant takes a colour
reference (`guidance="reference"` / "reference_hints"), trains a step and runs with and without one; the residual
base is the example-based transfer; a hint wins where it is; `mangacolor train --guidance reference` fills the
reference recipe and records it; `mangacolor colorize --reference` means correspondence for a reference model and the
palette for a palette model; bad references are one line; ONNX export refuses a reference model in one line."""
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.cli import main
from manga_colorization.colorize import MAX_REFERENCES, Colorizer, reference_canvas
from manga_colorization.core import UserError
from manga_colorization.guidance import transfer_chroma
from manga_colorization.models import list_models, make_generator, save_generator
from manga_colorization.runs import load_generator
from manga_colorization.train import GANStep, TrainConfig, apply_recipe, setup_device

TINY = dict(size=32, width=8, depth=3, batch_size=4, epochs=1, limit=8, val_limit=4, device="cpu", pretrained=False,
            d_width=8, d_layers=2, samples=2, tensorboard=False)
META = {"size": 32, "input_mode": "gray", "out_ch": 2, "color_space": "lab"}


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _colour(seed=0, size=32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, size // 4, size // 4, generator=g) * 2 - 1).repeat_interleave(4, 2).repeat_interleave(4, 3)


@pytest.mark.parametrize("guidance", ["reference", "reference_hints"])
@pytest.mark.parametrize("arch", list_models("colorize"))
def test_every_variant_trains_a_reference_step_and_runs_with_and_without_one(arch, guidance):
    cfg = apply_recipe(TrainConfig(**{**TINY, "arch": arch, "guidance": guidance, "hue_rotate": 1.0,
                                      "gen_options": {"ext_size": 32} if "ext" in arch else None}))
    assert cfg.out_ch == 2 and cfg.gen_options["norm"] == "group" and cfg.gen_options["reference_residual"]
    step = GANStep(cfg, setup_device(cfg))
    G = step.G
    assert G.use_reference and G.reference_transfer and G.reference_residual and G.reference_levels == (2, 3)
    assert G.use_hints == (guidance == "reference_hints") and G.hint_spread == G.use_hints
    before = [p.detach().clone() for p in G.parameters() if p.requires_grad]
    query = G.ref_query["2"].weight.detach().clone()
    terms = step(torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1)
    assert terms["ok"] and np.isfinite(terms["loss_g"])
    assert any(not torch.equal(a, b) for a, b in zip(before, [p for p in G.parameters() if p.requires_grad]))
    assert not torch.equal(query, G.ref_query["2"].weight)            # the correspondence learns
    G.eval()
    x = torch.rand(2, 1, 40, 24) * 2 - 1                               # any size; the reference any size too
    with torch.no_grad(): with_ref, without = G(x, reference=_colour(1, 48)), G(x)
    assert with_ref.shape == without.shape == (2, 2, 40, 24) and torch.isfinite(with_ref).all()
    assert (with_ref - without).abs().max() > 1e-3


def test_a_missing_reference_is_all_paper():
    torch.manual_seed(0)
    G = make_generator("unet", width=8, depth=4, out_ch=2, guidance="reference", norm="group",
                       reference_transfer=True, reference_residual=True).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad(): test = G(x), G(x, reference=torch.ones(1, 3, 20, 20))
    assert torch.equal(*test)
    with pytest.raises(UserError, match="reference must be"): G(x, reference=torch.ones(3, 20, 20))
    plain = make_generator("unet", width=8, depth=4, out_ch=2)
    with pytest.raises(UserError, match="not trained with a reference"): plain(x, reference=_colour())
    with pytest.raises(UserError, match="reference_residual needs"):
        make_generator("unet", width=8, depth=4, out_ch=3, guidance="reference", reference_residual=True)


def test_residual_with_a_zeroed_head_outputs_the_transfer_exactly():
    torch.manual_seed(0)
    G = make_generator("unet", width=8, depth=4, out_ch=2, guidance="reference", norm="group",
                       reference_transfer=True, reference_residual=True).eval()
    for p in G.final.parameters(): torch.nn.init.zeros_(p)
    x, ref = torch.rand(2, 1, 32, 32) * 2 - 1, _colour(2)
    with torch.no_grad(): out = G(x, reference=ref)
    ab, _ = transfer_chroma(x, ref, samples=G.reference_samples, remap=False)
    assert ab.abs().max() > 0.05
    torch.testing.assert_close(out, ab.clamp(-1, 1), atol=1e-6, rtol=0)
    with torch.no_grad(): assert G(x).abs().max() == 0                 # no reference: no base


def test_a_hint_wins_where_it_is():
    torch.manual_seed(0)
    G = make_generator("unet", width=8, depth=4, out_ch=2, guidance="reference_hints", norm="group",
                       reference_transfer=True, reference_residual=True, hint_spread=True, hint_residual=True).eval()
    hints = torch.zeros(2, 3, 32, 32)
    hints[:, :2, 5:8, 9:12] = torch.tensor([0.4, -0.3]).view(2, 1, 1)
    hints[:, 2, 5:8, 9:12] = 1
    with torch.no_grad(): out = G(torch.rand(2, 1, 32, 32) * 2 - 1, hints=hints, reference=_colour(3))
    assert torch.equal(out[:, :, 5:8, 9:12], hints[:, :2, 5:8, 9:12])
    assert not torch.equal(out[:, :, 20:, 20:], torch.zeros_like(out[:, :, 20:, 20:]))


def test_train_cli_records_the_reference_recipe_and_the_run_reloads(tmp_path):
    out = tmp_path / "ref"
    rc, _, err = _cli(["train", "--out", out, "--size", 32, "--width", 8, "--depth", 3, "--batch-size", 4,
                       "--epochs", 1, "--limit", 8, "--val-limit", 4, "--device", "cpu", "--no-pretrained",
                       "--d-width", 8, "--d-layers", 2, "--no-tensorboard", "--guidance", "reference"])
    assert rc == 0, err[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["out_ch"] == 2 and config["gen_options"] == {"norm": "group", "reference_transfer": True,
                                                               "reference_residual": True, "reference_siamese": True}
    G = load_generator(out, device="cpu")
    assert G.uses_reference and G.module.reference_residual and G.module.reference_levels == (2, 3)
    assert G.module.reference_siamese
    assert G(torch.zeros(1, 1, 32, 32), reference=_colour()).shape == (1, 2, 32, 32)


def _folder_with_poses(root):
    "train/ and val/ of plain pictures, and poses/ of two characters in three poses each, listed in groups.json."
    for split, n in (("train", 6), ("val", 4), ("poses", 6)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            px = np.full((40, 40, 3), (40 * i, 120, 220 - 30 * i), np.uint8)
            px[8:30, 10:24] = (200, 40 * (i % 3), 90 if i < 3 else 10)
            Image.fromarray(px).save(root / split / f"{i}.png")
    groups = {"groups": [[f"poses/{i}.png" for i in k] for k in ((0, 1, 2), (3, 4, 5))]}
    (root / "groups.json").write_text(json.dumps(groups))
    return root / "groups.json"


def test_train_cli_trains_with_same_character_groups_and_refuses_them_without_a_reference(tmp_path):
    groups = _folder_with_poses(tmp_path / "data")
    base = ["train", "--data", tmp_path / "data", "--size", 32, "--width", 8, "--depth", 3, "--batch-size", 4,
            "--epochs", 1, "--limit", 8, "--val-limit", 4, "--device", "cpu", "--no-pretrained", "--no-tensorboard",
            "--reference-groups", groups]
    rc, _, err = _cli([*base, "--out", tmp_path / "ref", "--guidance", "reference"])
    assert rc == 0, err[-2000:]
    assert json.loads((tmp_path / "ref" / "config.json").read_text())["reference_groups"] == str(groups)
    rc, _, err = _cli([*base, "--out", tmp_path / "hints", "--guidance", "hints"])
    assert rc == 2 and "only a reference guidance" in err and err.count("\n") == 1, err
    (tmp_path / "bad.json").write_text("[1, 2]")
    rc, _, err = _cli([*base[:-1], tmp_path / "bad.json", "--out", tmp_path / "bad", "--guidance", "reference"])
    assert rc == 2 and "not a reference groups file" in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    "A saved reference generator (random weights) and a saved palette generator."
    root = tmp_path_factory.mktemp("refgen")
    torch.manual_seed(0)
    save_generator(make_generator("unet", width=8, depth=4, out_ch=2, guidance="reference", norm="group",
                                  reference_transfer=True, reference_residual=True), root / "ref", META)
    pal = make_generator("unet", width=8, depth=4, out_ch=2, guidance="palette")
    torch.nn.init.normal_(pal.film.mlp[-1].weight, std=0.2)                # its palette shows
    save_generator(pal, root / "pal", META)
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 60, 200))):
        img = Image.new("RGB", (48, 40), colour)
        img.paste((240, 220, 200), (0, 0, 24, 40)); img.save(root / f"{name}.png")
    img = Image.fromarray((np.indices((80, 64)).sum(0) % 200 + 30).astype(np.uint8)); img.save(root / "page.png")
    return root


def test_colorize_api_and_cli_agree_on_a_reference_model(models, tmp_path):
    col = Colorizer(models / "ref", device="cpu", keep_white=False)
    page = models / "page.png"
    plain = np.asarray(col.colorize(page), np.float32)
    red = np.asarray(col.colorize(page, reference=models / "red.png"), np.float32)
    both = np.asarray(col.colorize(page, reference=[models / "red.png", models / "blue.png"]), np.float32)
    assert np.abs(plain - red).max() > 2 and np.abs(red - both).max() > 2
    rc, _, err = _cli(["colorize", page, "--checkpoint", models / "ref", "--out", tmp_path / "o", "--no-keep-white",
                       "--device", "cpu", "--reference", models / "red.png", "--reference", models / "blue.png"])
    assert rc == 0, err
    assert np.abs(np.asarray(Image.open(tmp_path / "o" / "page.png"), np.float32) - both).max() <= 1
    assert reference_canvas([models / "red.png"] * 3, 32).shape == (1, 3, 64, 64)       # tiled 2 x 2 on paper


def test_reference_on_a_palette_model_stays_the_palette(models, tmp_path):
    col = Colorizer(models / "pal", device="cpu", keep_white=False)
    page = models / "page.png"
    red = np.asarray(col.colorize(page, palette=models / "red.png"))
    assert np.array_equal(np.asarray(col.colorize(page, reference=models / "red.png")), red)
    assert not np.array_equal(np.asarray(col.colorize(page)), red)
    rc, _, err = _cli(["colorize", page, "--checkpoint", models / "pal", "--out", tmp_path / "o", "--no-keep-white",
                       "--device", "cpu", "--reference", models / "red.png"])
    assert rc == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "page.png").convert("RGB")), red)
    rc, _, err = _cli(["colorize", page, "--checkpoint", models / "pal", "--out", tmp_path / "o2",
                       "--reference", models / "red.png", "--reference", models / "blue.png"])
    assert rc == 2 and "takes one palette picture" in err and len(err.strip().splitlines()) == 1


def test_bad_references_are_one_line(models, tmp_path):
    page = models / "page.png"
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (30, 30), (120, 120, 120)).save(tmp_path / "gray.png")
    cases = [([tmp_path / "text.png"], [], "text.png"), ([tmp_path / "gray.png"], [], "has no colour to give"),
             ([models / "red.png"], ["--max-pixels", 100], "red.png"),
             ([models / "red.png"] * (MAX_REFERENCES + 1), [], f"at most {MAX_REFERENCES}")]
    for i, (refs, extra, said) in enumerate(cases):
        argv = ["colorize", page, "--checkpoint", models / "ref", "--out", tmp_path / f"o{i}", *extra]
        rc, _, err = _cli(argv + [a for r in refs for a in ("--reference", r)])
        assert rc == 2 and said in err and len(err.strip().splitlines()) == 1, (said, err)
    with pytest.raises(UserError, match="trained without a reference"):
        Colorizer(models / "pal", device="cpu").colorize(page, reference=[models / "red.png"] * 2)
    rc, _, err = _cli(["export", "--checkpoint", models / "ref", "--onnx", "--out", tmp_path / "r.onnx"])
    assert rc == 2 and "not exported to ONNX" in err and len(err.strip().splitlines()) == 1
