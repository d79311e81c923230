"""MCAT pins the MCAT_Surv (coattn, concat) layer list, the co-attention map and its modality needs."""

import pytest
import torch

from models import create_model

BLCA = (94, 334, 521, 468, 1496, 479)


def _encoder_layer(d=256, ff=512):
    return (
        3 * d * d + 3 * d  # self-attention in-projection (q, k, v) with biases
        + d * d + d  # self-attention out-projection
        + d * ff + ff  # linear1
        + ff * d + d  # linear2
        + 2 * d + 2 * d  # norm1, norm2
    )


def _gated_pool(d=256):
    return (d * d + d) + (d * d + d) + (d + 1)  # attention_a, attention_b, attention_c (256 -> 1)


def test_parameter_count_from_the_layer_list():
    d = 256
    expected = (
        1024 * d + d  # WSI fc
        + sum(s * d + d for s in BLCA)  # first SNN block per group
        + 6 * (d * d + d)  # second SNN block per group
        + 3 * d * d + 3 * d + d * d + d  # co-attention (1 head): in- and out-projections
        + 2 * _encoder_layer()  # path transformer, 2 layers
        + _gated_pool() + d * d + d  # path pooling + rho
        + 2 * _encoder_layer()  # omic transformer, 2 layers
        + _gated_pool() + d * d + d  # omic pooling + rho
        + 2 * d * d + d + d * d + d  # concat fusion: Linear(512 -> 256), Linear(256 -> 256)
        + d * 4 + 4  # classifier
    )
    model = create_model("mcat", omic_sizes=BLCA)
    assert sum(p.numel() for p in model.parameters()) == expected == 4_492_038


def test_coattention_and_transformers_follow_the_reference_configuration():
    model = create_model("mcat")
    assert model.coattn.num_heads == 1 and model.coattn.dropout == 0.0 and model.coattn.batch_first
    for branch in (model.path_branch, model.omic_branch):
        layers = branch.transformer.layers
        assert len(layers) == 2
        layer = layers[0]
        assert layer.self_attn.num_heads == 8 and layer.linear1.out_features == 512
        assert not layer.norm_first and layer.dropout.p == 0.25


@pytest.mark.parametrize("n", [1, 5, 257, 3000])
def test_unbatched_bag_shapes_and_coattention_map(n):
    model = create_model("mcat", omic_sizes=BLCA).eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(n, 1024), omics=[torch.randn(s) for s in BLCA])
    assert out.logits.shape == (1, 4)
    assert out.aux["coattn"].shape == (1, 6, n)
    torch.testing.assert_close(out.aux["coattn"].sum(-1), torch.ones(1, 6))
    assert out.aux["path_attention"].shape == out.aux["omic_attention"].shape == (1, 6)


def test_padding_gets_zero_coattention():
    model = create_model("mcat", omic_sizes=BLCA).eval()
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[0, 4:] = False
    with torch.no_grad():
        out = model(wsi=torch.randn(2, 11, 1024), mask=mask, omics=[torch.randn(2, s) for s in BLCA])
    assert out.logits.shape == (2, 4)
    assert (out.aux["coattn"][0, :, 4:] == 0).all()


def test_refuses_a_missing_modality():
    model = create_model("mcat", omic_sizes=BLCA).eval()
    with pytest.raises(ValueError, match="mcat.*omics"):
        model(wsi=torch.randn(5, 1024), omics=None)
    with pytest.raises(ValueError, match="mcat.*wsi"):
        model(wsi=None, omics=[torch.randn(s) for s in BLCA])
