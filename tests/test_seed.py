"""Issue 12: `--recipe seed --seed-defects` trains exactly as the original code did, and its checkpoints load.

The original's networks, losses and step are re-written in `tests/seed_reference.py` from the issue's table (not
imported). Ours and that reference train 3 steps from the same weights and batches; their weights must agree up to float
order. The reference's state dicts, with the original's key names, load through `models.load_seed_checkpoint` with the
same eval outputs."""
import contextlib
import dataclasses
import io
import json

import pytest
import torch

from manga_colorization.models import PatchDiscriminator, _seed_key, is_seed_state, load_seed_checkpoint, make_generator
from manga_colorization.train import GANStep, TrainConfig, apply_recipe, setup_device

from seed_reference import D_KEYS, SeedAnime, SeedD, SeedUNet, SeedVGG, randomize_norms, seed_step


def _count(m): return sum(p.numel() for p in m.parameters())


def test_seed_figures():
    "The seed's parameter counts, and ours in its layout: 54,418,563 (UNet) and 2,767,553 (15×15 PatchGAN)."
    with torch.device("meta"):
        assert _count(SeedUNet()) == 54_418_563 == _count(make_generator("unet", conv_bias=True, outer_norm=True,
                                                                         init="default"))
        assert _count(make_generator("unet")) == 54_412_483
        D, ours = SeedD(), PatchDiscriminator(stride_last=2, conv_bias=True, init="default")
        assert _count(D) == 2_767_553 == _count(ours)
        assert D(torch.zeros(1, 1, 256, 256), torch.zeros(1, 3, 256, 256)).shape[-2:] == (15, 15)


def _ours_to_reference(ours: dict, ref: torch.nn.Module, depth: int, keys=None) -> None:
    "Copy our weights into the reference (through the seed's key names), strictly."
    def ours_of(k):
        if not keys: return ours[_seed_key(k, depth)]
        module, leaf = k.rsplit(".", 1)
        return ours[f"{keys[module]}.{leaf}"]
    ref.load_state_dict({k: ours_of(k) for k in ref.state_dict()}, strict=True)


def _config(**kw):
    # the original trained in fp32: compared exactly
    return apply_recipe(TrainConfig(recipe="seed", seed_defects=True, arch="unet_att_ext", loss="perceptual_anime",
                                    size=64, width=8, depth=5, d_width=8, device="cpu", pretrained=False,
                                        fused_adam=False,
                                    precision="fp32", **kw))


def _ours(config):
    torch.manual_seed(0)
    step = GANStep(config, setup_device(config))
    step.G.train(); step.D.train()
    return step


def _reference(step):
    "The seed's G, D and AnimeLoss holding the same weights as our step."
    G = SeedUNet(widths=(8, 16, 32, 64, 64), attention=True, extractor=True, ext_size=360)
    _ours_to_reference(step.G.state_dict(), G, 5)
    D = SeedD(width=8)
    _ours_to_reference(step.D.state_dict(), D, 5, D_KEYS)
    loss = SeedAnime(size=360)
    loss.body.load_state_dict(step.loss.anime.extractor.body.module.state_dict())
    loss.head[2:].load_state_dict(step.loss.anime.extractor.pool.module[2:].state_dict())
    loss.vgg.vgg.load_state_dict(step.loss.vgg.extractor.features.module.state_dict())
    return G, D, loss


def _batches(n=3, b=2, size=64):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(b, 1, size, size, generator=g) * 2 - 1,
             torch.rand(b, 3, size, size, generator=g) * 2 - 1) for _ in range(n)]


def _noise_only(key: str, state: dict) -> bool:
    ("A conv bias right before a BatchNorm (its true gradient is exactly 0: the norm removes it), or that norm's "
     "running mean (which carries it).")
    block, _, name = key.rpartition(".")
    layer, _, kind = block.rpartition(".")
    conv_bias = kind in ("conv", "deconv") and name == "bias"
    return f"{layer}.bn.weight" in state and (conv_bias or (kind == "bn" and name == "running_mean"))


def _max_diff(step, G, D, noise_only: bool = False) -> float:
    ("Largest difference between our weights (and BatchNorm statistics) and the reference's: over the tensors that "
     "matter, or (`noise_only`) "
     "over the biases whose gradient is float noise (Adam turns noise of either sign into steps of up to lr, whatever "
     "the machine's summation order).")
    ours_g, ours_d, ref_g, ref_d = step.G.state_dict(), step.D.state_dict(), G.state_dict(), D.state_dict()
    diffs = [(v.float() - ours_g[_seed_key(k, 5)].float()).abs().max().item() for k, v in ref_g.items()
             if _noise_only(k, ref_g) == noise_only]
    diffs += [(v.float() - ours_d[D_KEYS[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]].float()).abs().max().item()
              for k, v in ref_d.items() if _noise_only(k, ref_d) == noise_only]
    return max(diffs)


def test_three_steps_match_the_original():
    ("--recipe seed --seed-defects: 3 steps of ours and of the re-written original, from the same weights and batches, "
     "end equal.")
    config = _config()
    assert (config.step_order, config.batch_size, config.augment, config.resize_filter,
            config.drop_last) == ("g_first", 32, "none", "bilinear", False)
    step = _ours(config)
    G, D, loss = _reference(step)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    assert _max_diff(step, G, D) == 0.0 and _max_diff(step, G, D, noise_only=True) == 0.0
    ours, theirs = [], []
    for i, (x, y) in enumerate(_batches()):
        torch.manual_seed(100 + i); terms = step(x, y)
        torch.manual_seed(100 + i); theirs.append(seed_step(G, D, opt_g, opt_d, x, y, loss))
        assert terms["ok"]; ours.append((terms["loss_g"], terms["loss_d"]))
    diff = _max_diff(step, G, D)
    print(f"losses ours {ours}\n      seed {theirs}\nmax weight difference after 3 steps: {diff:.2e}")
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=1e-4, atol=1e-5)
    assert diff < 2e-5, diff
    # 3 Adam steps of at most lr on zero-gradient biases
    assert _max_diff(step, G, D, noise_only=True) <= 3 * 2e-4 * 1.01
    # the test has teeth: pix2pix's step order (D first) on the same weights and batches ends measurably elsewhere
    other = _ours(dataclasses.replace(config, step_order="d_first"))
    other.G.load_state_dict(_ours(config).G.state_dict())
    for i, (x, y) in enumerate(_batches()):
        torch.manual_seed(100 + i); other(x, y)
    assert max((a - b).abs().max().item() for a, b in zip(other.D.state_dict().values(),
                                                          step.D.state_dict().values())) > 100 * diff


def _write_seed_checkpoint(tmp_path, name, widths, **kw):
    torch.manual_seed(3)
    ref = randomize_norms(SeedUNet(widths=widths, **kw)).eval()
    path = tmp_path / f"{name}_G.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.mark.parametrize("att,ext", [(False, False), (True, False), (False, True), (True, True)])
def test_load_seed_checkpoint_all_variants(tmp_path, att, ext):
    "A state dict the original saved (its key names) loads into ours, folded or not, with the same eval outputs."
    ref, path = _write_seed_checkpoint(tmp_path, "v", (8, 16, 32, 64, 64), attention=att, extractor=ext)
    assert is_seed_state(torch.load(path, weights_only=True))
    x = torch.rand(2, 1, 32, 32) * 2 - 1                      # 32² at depth 5: the 1×1 bottleneck of the seed at 256²
    with torch.no_grad():
        want = ref(x)
        for layout in ("pix2pix", "seed"):
            G = load_seed_checkpoint(path, layout=layout)
            assert G.config["name"] == "unet" + ("_att" if att else "") + ("_ext" if ext else "")
            torch.testing.assert_close(G(x), want, rtol=0, atol=1e-5)
            assert not G.training


def test_load_full_size_seed_unet():
    ("The seed's own size (54,418,563 parameters) folds into our standard 54,412,483-parameter layout, equal in eval "
     "mode at 256².")
    torch.manual_seed(4)
    ref = randomize_norms(SeedUNet()).eval()
    G = load_seed_checkpoint({f"module.{k}": v for k, v in ref.state_dict().items()})   # DDP prefixes are fine too
    assert _count(G) == 54_412_483 and G.config["depth"] == 8 and G.config["width"] == 64
    x = torch.rand(1, 1, 256, 256) * 2 - 1
    with torch.no_grad(): torch.testing.assert_close(G(x), ref(x), rtol=0, atol=1e-5)


def test_seed_discriminator_state_loads():
    "The seed's D state dict fits our PatchDiscriminator in the seed's geometry (same outputs in train mode)."
    torch.manual_seed(5)
    ref, ours = SeedD(width=8), PatchDiscriminator(width=8, stride_last=2, conv_bias=True, init="default")
    ours.load_state_dict({D_KEYS[k.rsplit(".", 1)[0]] + "." + k.rsplit(".",
                                                                       1)[1]: v for k, v in ref.state_dict().items()})
    x, c = torch.rand(2, 1, 64, 64), torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(ours(x, c), ref(x, c))


def test_seed_vgg_defect_matches():
    "Defect 4 reproduced: our VGG term with seed formulas and defects equals the seed's Σ MSE on [-1, 1] input."
    from manga_colorization.losses import VGGPerceptualLoss
    ours, ref = VGGPerceptualLoss(pretrained=False, distance="mse_sum", seed_defect=True), SeedVGG()
    ref.vgg.load_state_dict(ours.extractor.features.module.state_dict())
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(ours(a, b), ref(a, b), rtol=1e-5, atol=1e-6)


def test_cli_seed_recipe_trains_on_cpu(tmp_path):
    ("`mangacolor train --recipe seed --seed-defects` on synthetic data: the recipe's fields in config.json, the last "
     "partial batch kept.")
    from manga_colorization.cli import main
    from manga_colorization.runs import Run
    out = tmp_path / "seed"
    args = ["train", "--recipe", "seed", "--seed-defects", "--arch", "unet_att", "--data", "synthetic", "--out",
            str(out), "--size", "32",
            "--width", "8", "--depth", "5", "--batch-size", "4", "--epochs", "1", "--limit", "10", "--val-limit", "4",
                "--d-width", "8",
            "--no-pretrained", "--no-tensorboard", "--device", "cpu"]
    with contextlib.redirect_stderr(io.StringIO()): assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["recipe"], config["batch_size"], config["augment"], config["step_order"],
            config["layout"]) == ("seed", 4, "none", "g_first", "seed")
    assert config["gen_options"]["attention_at"] == 32 and config["gen_options"]["attention_scaled"] is False
    assert Run(out).metrics()[-1]["step"] == 3                                  # 10 images in batches of 4: 4 + 4 + 2


def test_seed_checkpoint_through_load_generator_and_colorize(tmp_path):
    "`runs.load_generator` and `mangacolor colorize --checkpoint seed_G.pth` take a state dict the original saved."
    import numpy as np
    from PIL import Image
    from manga_colorization.cli import main
    from manga_colorization.runs import load_generator
    ref, path = _write_seed_checkpoint(tmp_path, "seed", (8, 16, 32, 64, 64))
    G = load_generator(path)
    assert G.meta["source"] == "seed" and G.size == 256 and G.config["name"] == "unet"
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad(): torch.testing.assert_close(G(x), ref(x), rtol=0, atol=1e-5)
    page = tmp_path / "pages" / "p1.png"
    page.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((96, 64)) * 255).astype(np.uint8)).save(page)
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["colorize", str(page), "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--working-size",
                     "64"]) == 0
    assert Image.open(tmp_path / "out" / "p1.png").size == (64, 96)
