"""SNN pins the MCAT/PORPOISE "small" genomic network: layers, init, input width, omics-only use."""

import math

import pytest
import torch

from models import create_model

BLCA = (94, 334, 521, 468, 1496, 479)


def test_parameter_count_from_the_layer_list():
    d_in = sum(BLCA)  # 3,392: the six groups concatenated
    expected = (
        d_in * 256 + 256  # block 1: Linear(3392 -> 256)
        + 256 * 256 + 256  # block 2
        + 256 * 256 + 256  # block 3
        + 256 * 256 + 256  # block 4
        + 256 * 4 + 4  # classifier
    )
    model = create_model("snn", omic_sizes=BLCA)
    assert sum(p.numel() for p in model.parameters()) == expected == 1_067_012


def test_blocks_are_linear_elu_alphadropout():
    model = create_model("snn")
    kinds = [type(m).__name__ for m in model.fc_omic.modules() if not isinstance(m, torch.nn.Sequential)]
    assert kinds == ["Linear", "ELU", "AlphaDropout"] * 4
    assert all(m.p == 0.25 for m in model.modules() if isinstance(m, torch.nn.AlphaDropout))


def test_init_is_normal_with_std_one_over_sqrt_fan_in_and_zero_bias():
    torch.manual_seed(3)
    model = create_model("snn", omic_sizes=BLCA)
    for layer in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
        assert (layer.bias == 0).all()
        expected = 1.0 / math.sqrt(layer.in_features)
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize("batch", [None, 5])
def test_output_shape(batch):
    model = create_model("snn", omic_sizes=BLCA).eval()
    omics = [torch.randn(s) if batch is None else torch.randn(batch, s) for s in BLCA]
    with torch.no_grad():
        out = model(omics=omics)
    assert out.logits.shape == (1 if batch is None else batch, 4)


def test_ignores_wsi_and_refuses_missing_omics():
    model = create_model("snn").eval()
    omics = [torch.randn(2, s) for s in BLCA]
    with torch.no_grad():
        alone = model(omics=omics).logits
        with_wsi = model(wsi=torch.randn(2, 9, 1024), omics=omics).logits
    torch.testing.assert_close(alone, with_wsi)
    with pytest.raises(ValueError, match="snn.*omics"):
        model(wsi=torch.randn(9, 1024), omics=None)


def test_paper_defaults_carry_the_released_l1():
    from models import get_model_class

    assert get_model_class("snn").paper_defaults["l1_reg"] == 1e-4
