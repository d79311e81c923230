"""The exact short-sequence Nystrom path equals the library's computation: outputs and every gradient.

References run the `nystrom-attention` package with oneDNN disabled: on CPU oneDNN's depthwise
conv gets the residual conv's weight gradient wrong at some padded lengths (256 among them), and
the reference must be the library's maths, not that kernel bug (see models/nystrom.py).
"""

import copy

import nystrom_attention
import pytest
import torch
import torch.nn.functional as F

from models import create_model
from models.nystrom import NystromAttention

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")

TOL = 1e-5  # relative to the largest magnitude of each compared tensor
CONFIG = dict(dim=512, dim_head=64, heads=8, num_landmarks=256, pinv_iterations=6, residual=True, dropout=0.1)


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def _pair():
    lib = nystrom_attention.NystromAttention(**CONFIG)
    fast = NystromAttention(**CONFIG)
    fast.load_state_dict(lib.state_dict())  # same parameter names: official weights load
    return lib, fast


def _run(module, x, grad_out, seed=1, onednn=True):
    """Output, input gradient and parameter gradients of one forward/backward at a fixed RNG state."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with torch.backends.mkldnn.flags(enabled=onednn):
        torch.manual_seed(seed)
        out = module(x)
        (out * grad_out).sum().backward()
    return out.detach(), x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
@pytest.mark.parametrize("n", [1, 2, 15, 66, 255, 256, 257, 1000])
def test_attention_equals_the_library(n, train):
    lib, fast = _pair()
    lib.train(train), fast.train(train)
    x = torch.randn(1, n, CONFIG["dim"])
    grad_out = torch.randn(1, n, CONFIG["dim"])
    want = _run(lib, x, grad_out, onednn=False)
    got = _run(fast, x, grad_out)
    assert _rel(got[0], want[0]) <= TOL
    assert _rel(got[1], want[1]) <= TOL
    for (name, _), g, w in zip(fast.named_parameters(), got[2], want[2]):
        assert _rel(g, w) <= TOL, name


@pytest.mark.parametrize("n", [1, 66, 256])
def test_short_sequences_take_the_short_path_and_long_ones_the_library(n, monkeypatch):
    fast = NystromAttention(**CONFIG).eval()
    calls = []
    monkeypatch.setattr(nystrom_attention.NystromAttention, "forward", lambda *a, **k: calls.append(1))
    fast(torch.randn(1, n, CONFIG["dim"]))
    assert calls == []
    fast(torch.randn(1, 257, CONFIG["dim"]))
    assert calls == [1]


def test_residual_weight_gradient_is_the_exact_sum_at_256_tokens():
    """Where oneDNN's conv is off, the short path's res_conv gradient equals a float64 sum by hand."""
    fast = NystromAttention(**CONFIG).eval()
    x = torch.randn(1, 256, CONFIG["dim"])
    grad_out = torch.randn(1, 256, CONFIG["dim"])
    _, _, grads = _run(fast, x, grad_out)
    got = dict(zip([n for n, _ in fast.named_parameters()], grads))["res_conv.weight"]

    # d(loss)/d(out) -> d(loss)/d(residual) through to_out; then sum_t,d g[t] * v[t + j - 16] per head
    with torch.no_grad():
        g = (grad_out @ fast.to_out[0].weight).double().view(1, 256, 8, 64).permute(0, 2, 1, 3)
        v = fast.to_qkv(x).chunk(3, dim=-1)[2].double().view(1, 256, 8, 64).permute(0, 2, 1, 3)
        vpad = F.pad(v, (0, 0, 16, 16))
        want = torch.stack([(vpad[:, :, j : j + 256] * g).sum(dim=(0, 2, 3)) for j in range(33)], dim=1)
    assert _rel(got.double().view(8, 33), want) <= TOL


def test_a_batch_equals_its_bags_one_at_a_time():
    """The pseudo-inverse starts from a per-bag scale (the library takes one maximum over the batch)."""
    fast = NystromAttention(**CONFIG).eval()
    x = torch.randn(3, 40, CONFIG["dim"])
    x[1] *= 5.0  # different scales: a batch-wide maximum would couple the bags
    with torch.no_grad():
        batched = fast(x)
        alone = torch.cat([fast(x[i : i + 1]) for i in range(3)])
    assert _rel(batched, alone) <= TOL


def _library_transmil(model):
    """The same TransMIL with the package's NystromAttention in both layers (the slow reference)."""
    ref = copy.deepcopy(model)
    for layer in (ref.layer1, ref.layer2):
        lib = nystrom_attention.NystromAttention(**{**CONFIG, "dropout": layer.attn.to_out[1].p})
        lib.load_state_dict(layer.attn.state_dict())
        layer.attn = lib
    return ref


@pytest.mark.parametrize("patches", [1, 2, 15, 66, 225, 226, 1000])
def test_transmil_equals_transmil_on_the_library_path(patches):
    """Logits and every parameter's gradient; 225 patches = 226 tokens (short path), 226 = 257 (library)."""
    model = create_model("transmil").train()
    ref = _library_transmil(model).train()
    bag = torch.randn(patches, 1024)
    results = []
    short = patches <= 225  # above, both run the library; compare them on the same conv backend
    for m, onednn in ((ref, not short), (model, True)):
        m.zero_grad(set_to_none=True)
        with torch.backends.mkldnn.flags(enabled=onednn):
            torch.manual_seed(3)
            logits = m(wsi=bag).logits
            (logits * torch.tensor([[1.0, -2.0, 0.5, 3.0]])).sum().backward()
        results.append((logits.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (want, want_grads), (got, got_grads) = results
    assert _rel(got, want) <= TOL
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        assert _rel(got_grads[name], want_grads[name]) <= TOL, name
