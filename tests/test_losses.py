"""Loss contracts over the registries: every preset in `LOSSES` with every GAN mode runs a step whose gradient reaches
the generator's output while the frozen nets stay out of training. Values, the VGG input mapping and the anime
gradient are tested in 06_losses."""
import math

import pytest
import torch

from manga_colorization.losses import GAN_MODES, LOSS_TERMS, LOSSES, AdversarialLoss, make_loss


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("MANGACOLOR_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MANGACOLOR_OFFLINE", "1")
    torch.manual_seed(0)


@pytest.mark.parametrize("gan_mode", GAN_MODES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_every_preset_runs_a_step(name, gan_mode):
    gl = make_loss(name, pretrained=False, gan_mode=gan_mode, anime_input_size=None).train()
    out = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    terms = gl(out, torch.rand(2, 3, 32, 32) * 2 - 1, fake_logits=torch.randn(2, 1, 2, 2))
    assert tuple(terms) == LOSS_TERMS and all(torch.isfinite(v) for v in terms.values())
    terms["loss_g"].backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in gl.parameters()) and len(gl.state_dict()) == 0
    frozen = [net.extractor for net in (gl.vgg, gl.anime) if net is not None]
    assert not any(m.training for f in frozen for m in f.modules())     # .train() leaves the frozen nets in eval mode


@pytest.mark.parametrize("gan_mode", GAN_MODES)
def test_discriminator_loss_prefers_real(gan_mode):
    "Every GAN mode: D's loss is lower when it scores real high and fake low than the other way round."
    adv = AdversarialLoss(gan_mode)
    high, low = torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 4, 4), -2.0)
    assert adv.d(high, low) < adv.d(low, high)
    assert adv.g(high) < adv.g(low)


@pytest.mark.parametrize("pixel", ["l1", "l2", "huber"])
def test_regression_pixel_terms_reach_the_output(pixel):
    gl = make_loss("l1", pretrained=False, pixel=pixel)
    out = (torch.rand(2, 2, 16, 16) * 2 - 1).requires_grad_(True)
    terms = gl(out, torch.rand(2, 2, 16, 16) * 2 - 1, fake_logits=torch.randn(2, 1, 2, 2))
    terms["loss_g"].backward()
    assert out.grad.abs().sum() > 0 and terms["loss_l1"] > 0


def test_classification_term_trains_the_logits_and_rebalances():
    from manga_colorization.losses import ClassificationLoss
    gl = make_loss("l1", pretrained=False, pixel="classify", ab_bins=6, adv_weight=0.0).train()
    logits = torch.zeros(2, 36, 8, 8, requires_grad=True)
    target = torch.zeros(2, 2, 16, 16); target[0, :, :4, :4] = 0.8
    with pytest.raises(ValueError, match="needs the classify head's logits"): gl(torch.zeros(2, 2, 16, 16), target)
    terms = gl(torch.zeros(2, 2, 16, 16), target, logits=logits)
    terms["loss_g"].backward()
    assert logits.grad.abs().sum() > 0 and abs(terms["loss_l1"].item() - math.log(36)) < 1.0
    w = gl.classify.class_weights()
    vivid = gl.classify.bins.nearest(torch.full((1, 2, 1, 1), 0.8))
    neutral = gl.classify.bins.nearest(torch.zeros(1, 2, 1, 1))
    assert w[vivid].item() > w[neutral].item()
    assert len(gl.state_dict()) == 0                                      # the running prior is not a checkpoint entry
    with pytest.raises(ValueError, match="36 ab bins"):
        ClassificationLoss(6)(torch.zeros(1, 10, 2, 2), torch.zeros(1, 2, 4, 4))
