"""ABMIL pins the MCAT AMIL "small" layer list, WSI-only use and mask-aware attention."""

import pytest
import torch

from models import create_model


def test_parameter_count_is_the_reference_920069():
    model = create_model("abmil", path_dim=1024, n_bins=4)
    assert sum(p.numel() for p in model.parameters()) == 920_069


def test_layer_list_follows_mcat_amil_small():
    model = create_model("abmil")
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(512, 1024), (256, 512), (256, 512), (1, 256), (256, 512), (4, 256)]
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.25] * 4  # fc, both attention branches, rho


@pytest.mark.parametrize("n", [1, 5, 257, 3000])
def test_unbatched_bag_gives_one_row_without_omics(n):
    model = create_model("abmil").eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(n, 1024), omics=None)
    assert out.logits.shape == (1, 4)
    assert torch.isfinite(out.logits).all()
    assert out.aux["attention"].shape == (1, n)
    torch.testing.assert_close(out.aux["attention"].sum(), torch.tensor(1.0))


def test_batch_shape_and_padding_gets_zero_attention():
    model = create_model("abmil").eval()
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        out = model(wsi=torch.randn(3, 20, 1024), mask=mask)
    assert out.logits.shape == (3, 4)
    assert (out.aux["attention"][1, 7:] == 0).all()
    torch.testing.assert_close(out.aux["attention"].sum(dim=1), torch.ones(3))


def test_refuses_missing_wsi():
    with pytest.raises(ValueError, match="abmil.*wsi"):
        create_model("abmil")(wsi=None)
