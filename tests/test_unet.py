"""The thesis U-Net (listing A.1): shapes, parameter count, gradients, configuration errors."""

import pytest
import torch

from polydefect.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size", [(64, 64), (96, 128), (320, 320), (100, 70), (17, 33)])
def test_output_keeps_the_input_size_for_any_height_and_width(size):
    net = UNet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_parameter_count_matches_the_keras_model_of_listing_a1():
    # Keras' model.summary() of listing A.1 with RGB input reports 1,941,105 parameters;
    # a grey input has 2 x 16 x 9 fewer weights in the first convolution.
    assert sum(p.numel() for p in UNet(in_channels=3).parameters()) == 1_941_105
    assert sum(p.numel() for p in UNet(in_channels=1).parameters()) == 1_941_105 - 2 * 16 * 9


def test_forward_returns_logits_not_probabilities():
    net = UNet(widths=(4, 8), encoder_dropout=(0, 0), decoder_dropout=(0,)).eval()
    with torch.no_grad():
        net.head.bias.fill_(5.0)
        out = net(torch.rand(1, 1, 16, 16))
    assert (out > 1).all()


def test_every_parameter_gets_a_gradient():
    net = UNet()
    net(torch.rand(1, 1, 64, 64)).mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_widths_set_the_depth_and_channels():
    net = UNet(in_channels=3, out_channels=2, widths=(8, 16, 32), encoder_dropout=(0, 0, 0), decoder_dropout=(0, 0))
    assert net.depth == 2
    assert net(torch.rand(1, 3, 20, 20)).shape == (1, 2, 20, 20)


def test_dropout_lists_must_match_the_number_of_levels():
    with pytest.raises(ValueError, match="encoder_dropout"):
        UNet(widths=(8, 16), encoder_dropout=(0.1,), decoder_dropout=(0.1,))
    with pytest.raises(ValueError, match="decoder_dropout"):
        UNet(widths=(8, 16), encoder_dropout=(0.1, 0.1), decoder_dropout=(0.1, 0.1))


def test_convolutions_start_with_he_normal_weights_and_zero_biases():
    torch.manual_seed(0)
    conv = UNet().encoder[4][0]  # 128 -> 256 channels, fan_in 128 * 9
    assert conv.weight.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.05)
    assert not conv.bias.any()
