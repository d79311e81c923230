"""TransMIL pins the official layer list, square padding by repetition and PPEG.

That a padded batch gives each bag its own result is checked in test_batching.py.
"""

import pytest
import torch
import torch.nn.functional as F
from nystrom_attention import NystromAttention

from models import create_model


def test_parameter_count_from_the_layer_list():
    d = 512
    translayer = (
        2 * d  # LayerNorm
        + d * 3 * d  # to_qkv, no bias (8 heads x 64 = 512)
        + d * d + d  # to_out
        + 8 * 33  # residual depthwise conv over values: 8 heads, kernel (33, 1), no bias
    )
    expected = (
        1024 * d + d  # fc
        + d  # cls token
        + 2 * translayer
        + (d * 49 + d) + (d * 25 + d) + (d * 9 + d)  # PPEG depthwise 7x7, 5x5, 3x3
        + 2 * d  # final LayerNorm
        + d * 4 + 4  # classifier
    )
    model = create_model("transmil", n_bins=4)
    assert sum(p.numel() for p in model.parameters()) == expected == 2_673_172


def test_attention_is_the_official_nystrom_configuration():
    model = create_model("transmil")
    assert not model.batchable
    for layer in (model.layer1, model.layer2):
        attn = layer.attn
        assert isinstance(attn, NystromAttention)
        assert (attn.heads, attn.num_landmarks, attn.pinv_iterations) == (8, 256, 6)
        assert attn.residual and attn.to_out[1].p == 0.1
        assert attn.to_qkv.out_features == 3 * 8 * 64


@pytest.mark.parametrize("n", [1, 5, 257, 3000])
def test_unbatched_bag_gives_one_row_without_omics(n):
    model = create_model("transmil").eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(n, 1024), omics=None)
    assert out.logits.shape == (1, 4)
    assert torch.isfinite(out.logits).all()


def test_bag_is_padded_to_a_square_by_repeating_its_first_tokens():
    """Five patches become 3 x 3 = 9 grid tokens: patches 0-4 then 0-3 again, behind the cls token.

    A narrow model (dim 64) keeps this cheap; the padding rule does not depend on the width.
    """
    model = create_model("transmil", dim=64).eval()
    x = torch.randn(5, 1024)
    with torch.no_grad():
        h = model.fc(x).unsqueeze(0)
        tokens = torch.cat([model.cls_token, h, h[:, [0, 1, 2, 3]]], dim=1)
        tokens = model.layer2(model.pos_layer(model.layer1(tokens), 3))
        expected = model.classifier(model.norm(tokens)[:, 0])
        got = model(wsi=x).logits
    torch.testing.assert_close(got, expected)


def test_ppeg_adds_three_depthwise_convs_to_the_grid_and_passes_cls_through():
    model = create_model("transmil")
    ppeg = model.pos_layer
    x = torch.randn(2, 1 + 16, 512)
    with torch.no_grad():
        out = ppeg(x, 4)
        grid = x[:, 1:].transpose(1, 2).reshape(2, 512, 4, 4)
        conv = sum(
            F.conv2d(grid, c.weight, c.bias, padding=c.kernel_size[0] // 2, groups=512)
            for c in (ppeg.proj, ppeg.proj1, ppeg.proj2)
        )
    assert [c.kernel_size for c in (ppeg.proj, ppeg.proj1, ppeg.proj2)] == [(7, 7), (5, 5), (3, 3)]
    torch.testing.assert_close(out[:, 0], x[:, 0])
    torch.testing.assert_close(out[:, 1:], (grid + conv).flatten(2).transpose(1, 2))
