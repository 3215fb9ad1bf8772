"""ReconstructionTask: real training steps, loss options, whole-image reconstruction and the model configs."""

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import OmegaConf
from skimage.metrics import structural_similarity
from torch.utils.data import DataLoader

from polydefect.data.tiling import split, stitch
from polydefect.models.cae import ConvAutoencoder
from polydefect.models.dae import DenseAutoencoder
from polydefect.models.losses import reconstruction_loss, ssim
from polydefect.tasks.reconstruction import ReconstructionTask

torch.set_num_threads(2)
CONF = Path(__file__).resolve().parents[1] / "conf"


def _windows(count: int = 16, size: int = 32) -> torch.Tensor:
    """Smooth stripes of random phase and frequency: structure an autoencoder can learn in a few steps."""
    generator = torch.Generator().manual_seed(0)
    grid = torch.linspace(0, 1, size)
    phase, frequency = (
        torch.rand(count, 1, 1, generator=generator),
        1 + 3 * torch.rand(count, 1, 1, generator=generator),
    )
    stripes = 0.5 + 0.4 * torch.sin(2 * torch.pi * (frequency * grid[None, None, :] + phase))
    return stripes.expand(count, size, size).unsqueeze(1).contiguous()  # (count, 1, size, size)


def _loader(windows: torch.Tensor) -> DataLoader:
    return DataLoader([{"image": w} for w in windows], batch_size=8)


def _task(loss: str = "mse", noise_std: float = 0.0, lr: float = 1e-2) -> ReconstructionTask:
    torch.manual_seed(0)
    net = ConvAutoencoder(widths=(8, 16), bottleneck=(16, 8, 16), dropout=0.0)
    optimizer = functools.partial(torch.optim.Adam, lr=lr)
    return ReconstructionTask(net, optimizer, loss=loss, noise_std=noise_std, core=16, window=32, chunk_size=3)


def _fit(task: ReconstructionTask, windows: torch.Tensor, steps: int, tmp_path: Path) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, _loader(windows), _loader(windows))
    return trainer


def _loss(task: ReconstructionTask, windows: torch.Tensor) -> float:
    with torch.no_grad():
        return task.criterion(task.eval()(windows), windows).item()


@pytest.mark.parametrize(("loss", "noise_std"), [("mse", 0.0), ("ssim", 0.0), ("mse+ssim", 0.05)])
def test_a_few_real_training_steps_lower_the_loss(loss, noise_std, tmp_path):
    windows = _windows()
    task = _task(loss, noise_std)
    before = _loss(task, windows)
    trainer = _fit(task, windows, 12, tmp_path)
    assert _loss(task, windows) < 0.8 * before
    assert {"train/loss", "val/loss"} <= set(trainer.callback_metrics)


def test_early_stopping_watches_val_loss_with_the_configured_patience(tmp_path):
    task = _task()
    trainer = _fit(task, _windows(8), 1, tmp_path)
    stoppers = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert [(s.monitor, s.patience) for s in stoppers] == [("val/loss", 10)]


def test_reconstruct_is_the_stitched_reconstruction_of_every_window():
    task = _task().eval()
    images = torch.rand(2, 1, 40, 27)
    tiles, grid = split(images, 16, 32)
    with torch.no_grad():
        expected = stitch(task.net(tiles), grid)
    reconstruction = task.reconstruct(images)
    assert reconstruction.shape == images.shape
    torch.testing.assert_close(reconstruction, expected)


def test_reconstruct_leaves_the_task_in_training_mode_when_it_was():
    task = _task().train()
    task.reconstruct(torch.rand(1, 1, 20, 20))
    assert task.training


def test_anomaly_map_is_one_channel_non_negative_and_the_size_of_the_image():
    amap = _task().anomaly_map(torch.rand(3, 1, 37, 50))
    assert amap.shape == (3, 1, 37, 50)
    assert amap.min() >= 0


@pytest.mark.gpu
def test_a_task_moved_to_cuda_maps_images_as_on_the_cpu():
    images = torch.rand(3, 1, 37, 50, generator=torch.Generator().manual_seed(0))
    task = _task().eval()
    on_cpu = task.anomaly_map(images)
    on_cuda = task.to("cuda").anomaly_map(images)  # the task moves the images to its device
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-2, atol=1e-4)  # cuDNN may convolve in TF32


def test_ssim_agrees_with_scikit_image():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 40, 50, generator=generator, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(x.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    expected = [
        structural_similarity(
            a[0].numpy(), b[0].numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        for a, b in zip(x, y, strict=True)
    ]
    torch.testing.assert_close(ssim(x, y), torch.tensor(expected, dtype=torch.float64))
    assert ssim(x, x).allclose(torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_ssim_under_bf16_autocast_is_the_float32_ssim(device):
    # The variances are differences of nearly equal local means: in bf16 they cancel (0.82 for 0.94 here).
    generator = torch.Generator().manual_seed(0)
    x = 0.5 + 0.05 * torch.rand(2, 1, 32, 32, generator=generator)
    y = x + 0.01 * torch.randn(x.shape, generator=generator)
    x, y = x.to(device), y.to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        mixed = ssim(x, y)
    torch.testing.assert_close(mixed, ssim(x, y))


def test_an_unknown_loss_names_its_config_key():
    with pytest.raises(ValueError, match=r"model\.loss"):
        reconstruction_loss("l1")


@pytest.mark.parametrize("name", ["cae", "dae"])
def test_the_autoencoder_configs_build_a_reconstruction_task_with_thesis_defaults(name):
    with initialize_config_dir(config_dir=str(CONF / "model"), version_base="1.3"):
        model = compose(config_name=name)
    cfg = OmegaConf.create({"preprocess": {"tile": {"core": 256, "window": 320}}, "model": model})
    task = instantiate(cfg.model, _convert_="all")
    assert isinstance(task, ReconstructionTask)
    assert isinstance(task.net, ConvAutoencoder | DenseAutoencoder)
    assert (task.hparams.core, task.hparams.window, task.hparams.loss, task.hparams.patience) == (256, 320, "mse", 10)
    assert isinstance(task.configure_optimizers(), torch.optim.Adam)
