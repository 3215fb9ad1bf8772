"""The autoencoders: thesis configuration, shapes, gradients and the shared encode/decode/forward interface."""

import pytest
import torch
from torch import nn

from polydefect.models.cae import ConvAutoencoder
from polydefect.models.dae import DenseAutoencoder

torch.set_num_threads(2)
MODELS = {"cae": ConvAutoencoder, "dae": DenseAutoencoder}


def _conv(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k + c_out


def test_cae_has_the_parameter_count_of_listing_a2():
    # Keras counts for listing A.2 with one grey channel, layer by layer
    encoder = sum(_conv(a, b) for a, b in [(1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64)])
    encoder += sum(_conv(a, b) for a, b in [(64, 128), (128, 128), (128, 256), (256, 256)])
    dense = _conv(256, 100, 1) + _conv(100, 25, 1) + _conv(25, 100, 1)
    decoder = _conv(100, 128) + 2 * _conv(128, 128) + _conv(128, 64) + 2 * _conv(64, 64)
    decoder += _conv(64, 32) + 2 * _conv(32, 32) + _conv(32, 16) + 2 * _conv(16, 16) + _conv(16, 1)
    model = ConvAutoencoder()
    assert sum(p.numel() for p in model.parameters()) == encoder + dense + decoder == 1_813_818


def test_cae_has_the_31_layers_of_the_thesis():
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.Dropout)
    assert sum(isinstance(m, kinds) for m in ConvAutoencoder().modules()) == 31


def test_cae_code_is_25_channels_at_one_sixteenth_of_the_window():
    model = ConvAutoencoder().eval()
    z = model.encode(torch.rand(2, 1, 320, 320))
    assert z.shape == (2, 25, 20, 20)
    assert model.decode(z).shape == (2, 1, 320, 320)


def test_dae_code_is_a_vector_and_decodes_at_its_input_size():
    model = DenseAutoencoder(input_size=32, hidden=(64,), latent=8)
    z = model.encode(torch.rand(3, 1, 320, 320))
    assert z.shape == (3, 8)
    assert model.decode(z).shape == (3, 1, 32, 32)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_320_window_keeps_its_shape_in_0_1_without_nan(name):
    model = MODELS[name]().eval()
    with torch.no_grad():
        x_hat = model(torch.rand(2, 1, 320, 320))
    assert x_hat.shape == (2, 1, 320, 320)
    assert not x_hat.isnan().any()
    assert x_hat.min() >= 0 and x_hat.max() <= 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_gets_a_gradient(name):
    model = MODELS[name]()
    model(torch.rand(2, 1, 64, 64)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_cae_sizes_and_channels_are_configurable():
    model = ConvAutoencoder(in_channels=3, widths=(8, 16, 32), bottleneck=(12, 6, 12), dropout=0.0)
    assert model.encode(torch.rand(1, 3, 48, 64)).shape == (1, 6, 12, 16)
    assert model(torch.rand(1, 3, 48, 64)).shape == (1, 3, 48, 64)


def test_cae_rejects_a_window_not_divisible_by_its_downsampling():
    with pytest.raises(ValueError, match="divisible by 16"):
        ConvAutoencoder()(torch.rand(1, 1, 40, 40))


def test_dae_reconstructs_any_window_size_back_to_that_size():
    assert DenseAutoencoder()(torch.rand(2, 1, 100, 72)).shape == (2, 1, 100, 72)


def test_he_initialisation_keeps_the_signal_alive_through_the_cae():
    """PyTorch's default initialisation shrinks activations layer by layer (no normalisation in listing A.2),
    so an untrained CAE gives an almost flat output; He-normal keeps the input's variation."""
    torch.manual_seed(0)
    windows = torch.rand(4, 1, 64, 64)
    spread = {}
    for init in ("default", "he"):
        torch.manual_seed(0)
        net = ConvAutoencoder(init=init).eval()
        with torch.no_grad():
            spread[init] = net.decoder[:-1](net.from_code(net.encode(windows))).std().item()
    assert spread["he"] > 10 * spread["default"]
    with pytest.raises(ValueError, match="model.net.init"):
        ConvAutoencoder(init="xavier")


def _output_spread_after_training(init: str, output: str, steps: int = 30) -> float:
    """Train the thesis-sized CAE on 64 px windows that are mostly black (a masked part: bright texture on
    a quarter of the window), Adam at the thesis' learning rate; return the std of its eval-mode output."""
    generator = torch.Generator().manual_seed(0)
    windows = torch.zeros(64, 1, 64, 64)
    windows[:, :, 16:32, 16:40] = 0.5 + 0.3 * torch.rand(64, 1, 16, 24, generator=generator)
    torch.manual_seed(0)
    net = ConvAutoencoder(init=init, output=output)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = windows[torch.randint(0, len(windows), (8,), generator=generator)]
        loss = torch.nn.functional.mse_loss(net(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return net.eval()(windows[:16]).std().item()


def test_the_default_cae_keeps_reconstructing_masked_windows_where_the_literal_listing_goes_black():
    """Listing A.2 as written (sigmoid output, PyTorch init) saturates to a black output for every input on
    masked windows; the default (He init, linear output clamped in eval) goes on learning."""
    assert _output_spread_after_training("default", "sigmoid") < 1e-3
    assert _output_spread_after_training("he", "linear") > 0.05


def test_cae_output_is_unbounded_in_training_and_clamped_in_eval():
    net = ConvAutoencoder(widths=(4, 8), bottleneck=(6, 3, 6), dropout=0.0)
    with torch.no_grad():
        net.decoder[-2].bias.fill_(5.0)  # push every output above 1
        assert net.train()(torch.rand(1, 1, 16, 16)).max() > 1.0
        assert net.eval()(torch.rand(1, 1, 16, 16)).max() == 1.0
    with pytest.raises(ValueError, match="model.net.output"):
        ConvAutoencoder(output="tanh")
