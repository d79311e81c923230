"""AMIL+SNN pins MCAT's MIL_Attention_FC_surv (concat fusion, size "small") layer list and its modality needs."""

import pytest
import torch

from models import create_model

BLCA = (94, 334, 521, 468, 1496, 479)


def test_parameter_count_from_the_reference_layer_list():
    d_in = sum(BLCA)
    expected = (
        1024 * 512 + 512  # fc
        + 2 * (512 * 256 + 256) + 256 + 1  # gated attention: a, b (512 -> 256), c (256 -> 1)
        + 512 * 256 + 256  # rho
        + d_in * 256 + 256 + 256 * 256 + 256  # SNN: SNN_Block(input_dim -> 256), SNN_Block(256 -> 256)
        + 512 * 256 + 256 + 256 * 256 + 256  # concat fusion mm
        + 256 * 4 + 4  # classifier
    )
    model = create_model("abmil_snn", omic_sizes=BLCA)
    assert sum(p.numel() for p in model.parameters()) == expected == 2_051_589


def test_layer_list_and_snn_blocks_follow_the_reference():
    model = create_model("abmil_snn", omic_sizes=BLCA)
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(512, 1024), (256, 512), (256, 512), (1, 256), (256, 512), (256, sum(BLCA)), (256, 256),
                      (256, 512), (256, 256), (4, 256)]
    assert sum(isinstance(m, torch.nn.AlphaDropout) for m in model.modules()) == 2
    assert sum(isinstance(m, torch.nn.ELU) for m in model.modules()) == 2


def test_omics_move_the_logits_and_padding_gets_zero_attention():
    model = create_model("abmil_snn", omic_sizes=BLCA).eval()
    wsi, mask = torch.randn(2, 9, 1024), torch.ones(2, 9, dtype=torch.bool)
    mask[1, 3:] = False
    omics = [torch.randn(2, s) for s in BLCA]
    with torch.no_grad():
        out = model(wsi=wsi, mask=mask, omics=omics)
        other = model(wsi=wsi, mask=mask, omics=[o + 1 for o in omics]).logits
    assert out.logits.shape == (2, 4) and (out.aux["attention"][1, 3:] == 0).all()
    assert not torch.allclose(out.logits, other)


def test_refuses_a_missing_modality():
    model = create_model("abmil_snn", omic_sizes=BLCA).eval()
    with pytest.raises(ValueError, match="abmil_snn.*omics"):
        model(wsi=torch.randn(5, 1024), omics=None)
    with pytest.raises(ValueError, match="abmil_snn.*wsi"):
        model(wsi=None, omics=[torch.randn(s) for s in BLCA])
