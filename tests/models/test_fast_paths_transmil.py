"""The short Nystrom path and TransMIL's bag assembly equal, bit for bit, the code they replaced (kept in
_reference_fast_paths.py): outputs, every parameter gradient and the input gradients, in training (same dropout
draws) and in eval, for TransMIL and for CMTA, whose path and gene transformers run the same attention."""

import copy
import types

import pytest
import torch

from models import create_model
from models.nystrom import NystromAttention

from . import _reference_fast_paths as reference


def _as_reference(model):
    """A copy of `model` that runs the replaced code: the old short path in every attention, the old bag assembly."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, NystromAttention):
            m.short_forward = types.MethodType(reference.short_forward, m)
    if model.name == "transmil":
        ref._one_bag = types.MethodType(reference.transmil_one_bag, ref)
    return ref


def _step(model, inputs, seed=7):
    """Logits, aux tensors and the gradients of every input and parameter after one backward, by name."""
    model.zero_grad(set_to_none=True)
    wsi = inputs["wsi"].clone().requires_grad_(True)
    omics = None if inputs["omics"] is None else [o.clone().requires_grad_(True) for o in inputs["omics"]]
    torch.manual_seed(seed)
    out = model(wsi=wsi, omics=omics)
    loss = (out.logits * torch.linspace(-1, 1, out.logits.shape[1])).sum() + sum(a.sum() for a in out.aux.values())
    loss.backward()
    return {"logits": out.logits, **out.aux, "wsi grad": wsi.grad,
            **{f"omics {i} grad": o.grad for i, o in enumerate(omics or [])},
            **{name: p.grad for name, p in model.named_parameters()}}


def _assert_bitwise_equal(model, inputs):
    got, want = _step(model, inputs), _step(_as_reference(model), inputs)
    assert got.keys() == want.keys()
    for name in got:
        assert got[name] is not None and torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("patches", [1, 16, 66, 184, 225])
def test_transmil_is_bitwise_the_replaced_code(patches, train):
    torch.manual_seed(0)
    model = create_model("transmil").train(train)
    _assert_bitwise_equal(model, {"wsi": torch.randn(patches, 1024), "omics": None})


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("patches", [66, 184])
def test_cmta_is_bitwise_the_replaced_code(patches, train):
    torch.manual_seed(0)
    sizes = (94, 334, 521, 468, 1496, 479)
    model = create_model("cmta", omic_sizes=sizes).train(train)
    inputs = {"wsi": torch.randn(patches, 1024), "omics": [torch.randn(s) for s in sizes]}
    _assert_bitwise_equal(model, inputs)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("n", [1, 40, 64])  # 64 = num_landmarks: the path without a padding class
def test_batched_attention_is_bitwise_the_replaced_code(n, train):
    """Two bags in one call (the folded batch holds both bags' heads), with and without padding."""
    torch.manual_seed(0)
    attn = NystromAttention(dim=128, dim_head=16, heads=8, num_landmarks=64, pinv_iterations=6, residual=True,
                            dropout=0.1).train(train)
    x, grad_out = torch.randn(2, n, 128), torch.randn(2, n, 128)
    results = []
    for forward in (attn.short_forward, types.MethodType(reference.short_forward, attn)):
        attn.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(3)
        out = forward(xi)
        (out * grad_out).sum().backward()
        results.append([out, xi.grad, *(p.grad for p in attn.parameters())])
    for g, w in zip(*results):
        assert torch.equal(g, w)
