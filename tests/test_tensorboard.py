"""TensorBoard logging: when tensorboard is installed (the dev extra installs it), a run writes every metric and loss
term."""
import pytest

from manga_colorization.train import TrainConfig, train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install tensorboard)")


def test_run_logs_metrics_and_losses_to_tensorboard(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(data="synthetic", out=str(out), arch="unet", loss="l1", size=32, batch_size=4, epochs=2, width=8,
                      depth=4,
                      limit=8, val_limit=4, device="cpu", pretrained=False, tensorboard=True, samples=2))
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    acc = event_accumulator.EventAccumulator(str(out / "tensorboard")); acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"psnr", "ssim", "baseline_psnr", "loss_l1", "loss_g", "loss_d"} <= tags, tags
    assert len(acc.Scalars("psnr")) == 2      # one value per epoch
