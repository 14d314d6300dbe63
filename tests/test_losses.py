"""Losses: values on fixed tensors, VGG input mapping, anime-loss gradient, presets, frozen nets."""
import math

import pytest
import torch
from torch import nn
from torchvision.models import vgg16

from manga_colorization.core import UserError
from manga_colorization.losses import LOSS_TERMS, LOSSES, AdversarialLoss, AnimePerceptualLoss, GeneratorLoss, VGGPerceptualLoss, make_loss


@pytest.mark.parametrize("mode,g0,d_real2_fake0", [("bce", math.log(2), 0.5 * (math.log1p(math.exp(-2)) + math.log(2))),
                                                    ("lsgan", 1.0, 0.5 * (1.0 + 0.0)),
                                                    ("hinge", 0.0, 0.5 * (0.0 + 1.0))])
def test_adversarial_values(mode, g0, d_real2_fake0):
    adv = AdversarialLoss(mode)
    zeros, twos = torch.zeros(3, 1, 4, 4), torch.full((3, 1, 4, 4), 2.0)
    assert abs(adv.g(zeros).item() - g0) < 1e-6
    assert abs(adv.d(twos, zeros).item() - d_real2_fake0) < 1e-6


def test_generator_loss_fixed_values():
    gl = GeneratorLoss(perceptual_weight=0, pretrained=False)
    out, tgt = torch.full((2, 3, 8, 8), 0.5), torch.zeros(2, 3, 8, 8)
    terms = gl(out, tgt, fake_logits=torch.zeros(2, 1, 2, 2))
    assert tuple(terms) == LOSS_TERMS
    assert abs(terms["loss_l1"].item() - 0.5) < 1e-7
    assert abs(terms["loss_g"].item() - (0.01 * math.log(2) + 0.5)) < 1e-6
    gl2 = GeneratorLoss(adv_weight=0.5, l1_weight=2.0, perceptual_weight=0, pretrained=False, gan_mode="lsgan")
    terms = gl2(out, tgt, fake_logits=torch.zeros(2, 1, 2, 2))
    assert abs(terms["loss_g"].item() - (0.5 * 1.0 + 2.0 * 0.5)) < 1e-6


def test_vgg_input_mapping_matches_torchvision():
    loss = VGGPerceptualLoss(pretrained=False)
    ref = vgg16(weights=None).features[:16].eval()
    mine = [m for m in loss.extractor.modules() if isinstance(m, nn.Conv2d)]
    theirs = [m for m in ref if isinstance(m, nn.Conv2d)]
    assert len(mine) == 7
    for a, b in zip(mine, theirs):
        b.weight.data.copy_(a.weight); b.bias.data.copy_(a.bias)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    mapped = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(loss.extractor(x)[-1], ref(mapped), atol=1e-4)
        # feeding [-1,1] straight into ImageNet normalisation (the seed's bug) gives something else
        assert not torch.allclose(loss.extractor(x)[-1], ref((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / 0.226), atol=1e-2)
    assert loss(x, x).item() == 0.0


def test_anime_loss_gradient_reaches_output():
    anime = AnimePerceptualLoss(pretrained=False, input_size=None)
    out = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    anime(out, torch.rand(2, 3, 32, 32) * 2 - 1).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in anime.parameters())
    anime.train()
    assert not any(m.training for m in anime.extractor.modules())


def test_presets_and_frozen_nets_stay_out():
    assert set(LOSSES) == {"l1", "perceptual", "perceptual_anime"}
    gl = make_loss("perceptual_anime", pretrained=False, anime_input_size=None)
    assert gl.anime_mix == 0.9 and gl.vgg is not None and gl.anime is not None
    assert not any(p.requires_grad for p in gl.parameters())
    assert len(gl.state_dict()) == 0
    out = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    terms = gl(out, torch.rand(1, 3, 32, 32) * 2 - 1, fake_logits=torch.zeros(1, 1, 2, 2))
    expected = 0.01 * terms["loss_adv"] + terms["loss_l1"] + 0.1 * (0.9 * terms["loss_vgg"] + 0.1 * terms["loss_anime"])
    assert torch.allclose(terms["loss_g"], expected)
    with pytest.raises(UserError, match="choose one of"):
        make_loss("nope")
