"""MOTCat pins MOTCAT_Surv's layer list, the reference's entropic unbalanced Sinkhorn plan (detached),
and what a one-patch bag does. That a padded batch equals each bag alone is checked in test_batching.py."""

import numpy as np
import ot
import pytest
import torch

from models import create_model
from models.motcat import transport_plan

BLCA = (94, 334, 521, 468, 1496, 479)


def _encoder_layer(d=256, ff=512):
    return 3 * d * d + 3 * d + d * d + d + d * ff + ff + ff * d + d + 4 * d  # attention, ff, two norms


def test_parameter_count_from_the_layer_list():
    """MCAT's list without its learned co-attention: the transport plan has no parameters."""
    d = 256
    gated_pool_and_rho = 2 * (d * d + d) + (d + 1) + d * d + d
    expected = (
        1024 * d + d  # WSI fc
        + sum(s * d + d for s in BLCA) + 6 * (d * d + d)  # two SNN blocks per group
        + 2 * (2 * _encoder_layer() + gated_pool_and_rho)  # path and omic branches
        + 2 * d * d + d + d * d + d  # concat fusion
        + d * 4 + 4  # classifier
    )
    model = create_model("motcat", omic_sizes=BLCA)
    assert sum(p.numel() for p in model.parameters()) == expected == 4_228_870


def _entropic_uot(a, b, cost, reg, tau, iters=1000, tol=1e-6):
    """Unbalanced Sinkhorn-Knopp with the plain entropy regulariser (kernel exp(-M/reg)), as POT < 0.9.5."""
    kernel = np.exp(-cost / reg)
    u, v = np.ones_like(a), np.ones_like(b)
    power = tau / (tau + reg)
    for _ in range(iters):
        u_prev, v_prev = u, v
        u = (a / (kernel @ v)) ** power
        v = (b / (kernel.T @ u)) ** power
        change = max(np.abs(u - u_prev).max() / max(np.abs(u).max(), np.abs(u_prev).max(), 1.0),
                     np.abs(v - v_prev).max() / max(np.abs(v).max(), np.abs(v_prev).max(), 1.0))
        if change < tol:
            break
    return u[:, None] * kernel * v[None, :]


def test_plan_is_the_reference_entropic_unbalanced_sinkhorn():
    gen = torch.Generator().manual_seed(0)
    patches, genes = torch.randn(40, 16, generator=gen), torch.randn(6, 16, generator=gen)
    plan = transport_plan(patches, genes, reg=0.1, tau=0.5)
    x = (patches - patches.min(-1, keepdim=True).values).double()
    y = (genes - genes.min(-1, keepdim=True).values).double()
    cost = (torch.cdist(x, y) ** 2).numpy()
    cost /= cost.max()
    expected = _entropic_uot(np.full(40, 1 / 40), np.full(6, 1 / 6), cost, 0.1, 0.5)
    np.testing.assert_allclose(plan.numpy(), expected, rtol=1e-4, atol=1e-7)
    # POT's newer default (KL to a b^T) is another plan: the explicit reg_type matters
    kl = ot.unbalanced.sinkhorn_knopp_unbalanced(np.full(40, 1 / 40), np.full(6, 1 / 6), cost, 0.1, 0.5, reg_type="kl")
    assert not np.allclose(kl, expected, rtol=1e-2)


def test_plan_is_detached_and_gradients_flow_through_the_weighted_patches():
    model = create_model("motcat", omic_sizes=BLCA).eval()
    wsi = torch.randn(30, 1024, requires_grad=True)
    omics = [torch.randn(s, requires_grad=True) for s in BLCA]
    out = model(wsi=wsi, omics=omics)
    assert not out.aux["coattn"].requires_grad
    out.logits.sum().backward()
    assert wsi.grad.abs().sum() > 0 and model.wsi_net[0].weight.grad.abs().sum() > 0


def test_padding_gets_no_plan_mass():
    model = create_model("motcat", omic_sizes=BLCA).eval()
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[0, 4:] = False
    with torch.no_grad():
        out = model(wsi=torch.randn(2, 11, 1024), mask=mask, omics=[torch.randn(2, s) for s in BLCA])
    assert out.logits.shape == (2, 4) and out.aux["coattn"].shape == (2, 6, 11)
    assert (out.aux["coattn"][0, :, 4:] == 0).all() and (out.aux["coattn"][0, :, :4] > 0).all()


def test_one_patch_bag_runs():
    """Documented behaviour (the reference fails here): a one-row plan, finite logits and gradients."""
    model = create_model("motcat", omic_sizes=BLCA).eval()
    out = model(wsi=torch.randn(1, 1024), omics=[torch.randn(s) for s in BLCA])
    plan = out.aux["coattn"]
    assert plan.shape == (1, 6, 1) and (plan > 0).all()
    assert torch.isfinite(out.logits).all() and out.logits.shape == (1, 4)
    out.logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_refuses_a_missing_modality():
    model = create_model("motcat", omic_sizes=BLCA).eval()
    with pytest.raises(ValueError, match="motcat.*omics"):
        model(wsi=torch.randn(5, 1024), omics=None)
