"""Pretrained-weight contracts: never a download under test or offline, a clear error when one fails, VGG truncation and
input mapping, `mangacolor weights` (subprocess, exit codes). Architecture, resolution errors and freezing are tested
in 04_pretrained."""
import os
import subprocess

import pytest
import torch

from manga_colorization import pretrained as P


@pytest.fixture(autouse=True)
def weights_env(tmp_path, monkeypatch):
    "Every test sees empty temp weight folders and no downloads."
    monkeypatch.setenv("MANGACOLOR_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MANGACOLOR_OFFLINE", "1")
    return tmp_path


def test_no_download_under_offline(monkeypatch):
    called = []
    monkeypatch.setattr(P, "download_weights", lambda *a, **k: called.append(a))
    with pytest.raises(P.WeightsNotFoundError):
        P.resolve_weights("vgg16")
    assert not called


def test_download_failure_is_clear(weights_env, monkeypatch):
    def boom(*a, **k): raise OSError("no route to host")
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    with pytest.raises(P.WeightsNotFoundError, match="download failed.*no route"):
        P.download_weights("danbooru_resnet50")


def test_vgg_truncation_normalisation_and_grad(weights_env):
    vgg = P.vgg16_features(pretrained=False)
    assert len(vgg.features.module) == 16
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    feats = vgg(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256]
    feats[-1].sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())
    # [-1,1] -> [0,1] -> ImageNet normalisation: a white image becomes (1-mean)/std at the first layer's input
    first = {}
    h = vgg.features.module[0].register_forward_hook(lambda m, i, o: first.update(x=i[0]))
    vgg(torch.ones(1, 3, 4, 4)); h.remove()
    expect = (1 - torch.tensor(P.IMAGENET_MEAN)) / torch.tensor(P.IMAGENET_STD)
    assert torch.allclose(first["x"][0, :, 0, 0], expect, atol=1e-6)
    # order of layers follows the request
    a, b = P.vgg16_features(("relu2_2", "relu1_2"), pretrained=False)(torch.zeros(1, 3, 8, 8))
    assert a.shape[1] == 128 and b.shape[1] == 64


def test_cli_weights(weights_env):
    env = {"MANGACOLOR_WEIGHTS": str(weights_env / "weights"), "TORCH_HOME": str(weights_env / "torch"),
           "MANGACOLOR_OFFLINE": "1", "PATH": os.environ["PATH"]}
    out = subprocess.run(["mangacolor", "weights", "list"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "danbooru_resnet50" in out.stdout and "missing" in out.stdout
    out = subprocess.run(["mangacolor", "weights", "path", "vgg16"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "vgg16-397923af.pth" in out.stderr and "Traceback" not in out.stderr
