"""Padding never changes a bag's result, for every registered model.

A padded batch of bags of different sizes must give, in eval mode, each bag's logits as if it
were run alone; for batchable models the gradient of the summed per-patient loss over the batch
must equal the sum of the per-bag gradients (dropout off), so batching is only a speed-up.
New models join these checks by registering.
"""

import pytest
import torch

from bench.survival import nll_loss
from models import DEFAULT_OMIC_SIZES, create_model, get_model_class, list_models

SIZES = [14, 5]  # one bag padded to the other; at least 5 patches: G-HANet's hyperedges need that many
NETWORKS = [name for name in list_models() if not get_model_class(name).estimator]  # torch models: forward passes
BATCHABLE = [name for name in NETWORKS if get_model_class(name).batchable]


def _padded_batch(sizes, seed=0):
    """Bags padded to the longest with loud garbage, a mask, omics, and survival labels."""
    gen = torch.Generator().manual_seed(seed)
    n = max(sizes)
    mask = torch.arange(n) < torch.tensor(sizes)[:, None]
    wsi = torch.randn(len(sizes), n, 1024, generator=gen)
    wsi = torch.where(mask[..., None], wsi, 10 * torch.randn(wsi.shape, generator=gen))
    omics = [torch.randn(len(sizes), s, generator=gen) for s in DEFAULT_OMIC_SIZES]
    bins = torch.tensor([3, 1])[: len(sizes)]
    censorship = torch.tensor([0, 1])[: len(sizes)]
    return wsi, mask, omics, bins, censorship


def _patient_loss(model, out, omics, bins, censorship):
    """Per-patient NLL plus the model's own terms, as the trainer adds them."""
    loss = nll_loss(out.logits, bins, censorship)
    for extra in (model.extra_loss(out, omics), model.label_loss(out, bins)):
        loss = loss if extra is None else loss + extra
    return loss


def test_at_least_the_baselines_are_batchable():
    assert {"abmil", "snn", "mcat"} <= set(BATCHABLE)
    assert "transmil" not in BATCHABLE
    assert "motcat" in BATCHABLE and "cmta" not in BATCHABLE  # CMTA's square padding and landmarks are per bag
    assert {"abmil_snn", "clam_sb"} <= set(BATCHABLE) and "coxnet" not in NETWORKS


@pytest.mark.parametrize("name", NETWORKS)
def test_padded_batch_equals_each_bag_alone(name):
    model = create_model(name).eval()
    wsi, mask, omics, _, _ = _padded_batch(SIZES)
    with torch.no_grad():
        batch = model(wsi=wsi, mask=mask, omics=omics).logits
        alone = torch.cat(
            [model(wsi=wsi[i, :n], omics=[o[i] for o in omics]).logits for i, n in enumerate(SIZES)]
        )
    assert batch.shape == (len(SIZES), 4)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", BATCHABLE)
def test_batch_gradient_equals_sum_of_per_bag_gradients(name):
    model = create_model(name).eval()  # eval: dropout off, gradients still flow
    wsi, mask, omics, bins, cens = _padded_batch(SIZES, seed=1)

    model.zero_grad()
    out = model(wsi=wsi, mask=mask, omics=omics)
    _patient_loss(model, out, omics, bins, cens).sum().backward()
    batch_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    for i, n in enumerate(SIZES):
        bag_omics = [o[i : i + 1] for o in omics]
        out = model(wsi=wsi[i : i + 1, :n], omics=bag_omics)
        _patient_loss(model, out, bag_omics, bins[i : i + 1], cens[i : i + 1]).sum().backward()
    summed = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}

    assert batch_grads and batch_grads.keys() == summed.keys()
    assert any(g.abs().sum() > 0 for g in batch_grads.values())
    for key, grad in batch_grads.items():
        torch.testing.assert_close(grad, summed[key], atol=1e-5, rtol=1e-4, msg=lambda m, k=key: f"{k}: {m}")
