"""Metrics against known values: PSNR for a known MSE, SSIM of identical/flat images, colourfulness, ΔE, baseline."""
import pytest
import torch

from manga_colorization.core import rgb_to_gray, rgb_to_lab
from manga_colorization.metrics import (MetricMeter, colorfulness, delta_e, gray_to_rgb, image_metrics,
                                        optional_metrics_status, prediction_to_rgb, psnr, ssim)


def test_psnr_known_mse():
    target = torch.zeros(3, 3, 16, 16)
    out = target.clone()
    out[0] += 0.2          # 0.1 on [0,1]: MSE 0.01 -> 20 dB
    out[1] += 0.02         # 0.01: MSE 1e-4 -> 40 dB
    got = psnr(out, target)
    assert torch.allclose(got, torch.tensor([20.0, 40.0, 100.0]), atol=1e-3)


def test_ssim_identical_and_flat():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    a, b = torch.full((1, 3, 32, 32), -0.6), torch.full((1, 3, 32, 32), 0.2)   # 0.2 and 0.6 on [0,1]
    expected = (2 * .2 * .6 + 1e-4) / (.2 ** 2 + .6 ** 2 + 1e-4)
    assert abs(ssim(a, b).item() - expected) < 1e-4
    assert ssim(x, -x).mean() < 0.5


def test_colorfulness_known():
    red = torch.tensor([1., -1, -1]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    gray = torch.zeros(1, 3, 8, 8)
    got = colorfulness(torch.cat([red, gray]))
    assert abs(got[0].item() - 0.3 * (255 ** 2 + 127.5 ** 2) ** 0.5) < 1e-2
    assert got[1].item() < 1e-4


def test_delta_e_white_black():
    assert abs(delta_e(torch.ones(1, 3, 4, 4), -torch.ones(1, 3, 4, 4)).item() - 100) < 0.05


def test_baseline_and_meter():
    target = torch.rand(4, 3, 32, 32) * 2 - 1
    gray = rgb_to_gray(target)
    m = image_metrics(target, target, gray)
    assert set(m) >= {"psnr", "ssim", "colorfulness", "delta_e", "baseline_psnr", "baseline_ssim", "baseline_delta_e"}
    assert (m["psnr"] > m["baseline_psnr"]).all()
    assert torch.equal(gray_to_rgb(gray)[:, 0], gray[:, 0])
    meter = MetricMeter()
    meter.update({k: v[:1] for k, v in m.items()})
    meter.update({k: v[1:] for k, v in m.items()})
    assert meter.count == 4
    assert abs(meter.compute()["baseline_psnr"] - m["baseline_psnr"].double().mean().item()) < 1e-6


def test_lab_prediction_roundtrip():
    img = torch.rand(2, 3, 8, 8) * 0.5 + 0.25
    gray = rgb_to_gray(img) * 2 - 1
    ab = rgb_to_lab(img)[:, 1:] / 110
    assert (prediction_to_rgb(gray, ab) - (img * 2 - 1)).abs().mean() < 0.05
    with pytest.raises(ValueError, match="3 \\(RGB\\) or 2"):
        prediction_to_rgb(gray, img[:, :1])


def test_optional_metrics_report_a_reason():
    status = optional_metrics_status()
    assert set(status) == {"lpips", "fid"}
    assert all(v == "ok" or v.startswith("skipped") for v in status.values())


def test_ssim_tiny_images():
    "Images under 11 px (where torchmetrics' Gaussian cannot pad under 6 px) get the largest odd window that fits."
    for n in (8, 4):
        x = torch.rand(2, 3, n, n) * 2 - 1
        assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
        a, b = torch.full((1, 3, n, n), -0.6), torch.full((1, 3, n, n), 0.2)
        assert abs(ssim(a, b).item() - (2 * .2 * .6 + 1e-4) / (.2 ** 2 + .6 ** 2 + 1e-4)) < 1e-4
        assert ssim(x, -x).mean() < 0.5
    with pytest.raises(ValueError, match="at least 3x3 px"):
        ssim(torch.zeros(1, 3, 2, 8), torch.zeros(1, 3, 2, 8))
