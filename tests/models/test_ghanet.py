"""G-HANet pinned against the official code's facts (docs/ghanet.md sections 2-5)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch

from bench.survival import nll_loss
from models import OMICS, WSI, create_model, list_models
from models.base import OPTIM_KEYS, REFERENCE_OPTIM, SurvivalOutput
from models.ghanet import GHANet

BLCA_SIZES = (94, 334, 521, 468, 1496, 479)
SMALL_SIZES = (3, 4, 5, 6, 7, 8)
SMALL_PATH = 32  # input width for the gradient tests: the architecture does not depend on it


def small_model(**kw) -> GHANet:
    kw.setdefault("path_dim", SMALL_PATH)
    kw.setdefault("omic_sizes", SMALL_SIZES)
    return create_model("ghanet", **kw)


def padded_batch(bags: list[torch.Tensor], fill: float = float("nan")) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack bags into [B, N_max, D] with `fill` in the padding (which must never matter)."""
    n_max = max(b.shape[0] for b in bags)
    wsi = torch.full((len(bags), n_max, bags[0].shape[1]), fill)
    mask = torch.zeros(len(bags), n_max, dtype=torch.bool)
    for i, b in enumerate(bags):
        wsi[i, : b.shape[0]] = b
        mask[i, : b.shape[0]] = True
    return wsi, mask


def random_omics(batch: int, sizes=SMALL_SIZES) -> list[torch.Tensor]:
    return [torch.randn(batch, d) for d in sizes]


def test_contract_and_registration():
    assert "ghanet" in list_models()
    assert GHANet.train_modalities == {WSI, OMICS} and GHANet.infer_modalities == {WSI}
    assert GHANet.batchable
    assert GHANet.paper_defaults == {**REFERENCE_OPTIM, "dropout": 0.25, "topk_ratio": 0.2, "recon_weight": 0.3}
    space = GHANet.search_space(optuna.trial.FixedTrial({"lr": 3e-4, "weight_decay": 1e-5, "dropout": 0.1}))
    assert {"lr", "weight_decay", "dropout"} <= set(space)
    for params in (GHANet.paper_defaults, space):  # the trainer hands every non-optimiser key to the model
        small_model(**{k: v for k, v in params.items() if k not in OPTIM_KEYS})


def test_topk_ratio_knob():
    model = small_model(topk_ratio=0.5).eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(11, SMALL_PATH))
    assert (out.aux["hyperedges"].sum(-1) == 5).all()
    with pytest.raises(ValueError, match="topk_ratio"):
        small_model(topk_ratio=0.0)


def test_parameter_count_matches_documented_layer_list():
    """Count from the official layer list, minus the second cross-attention it builds but never calls."""
    lin = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
    ln = lambda d: 2 * d  # noqa: E731
    mha = 3 * lin(512, 512, bias=False) + lin(512, 512)  # q, k, v bias-free + to_out: 1,049,088
    ffn = lin(512, 4096) + lin(2048, 512)  # GEGLU halves 4096 -> 2048: 3,150,336
    decoders_shared = 6 * (lin(512, 512) + ln(512))  # per group before the output layer
    cab = (
        lin(1024, 512)  # wsi_net (ReLU, Dropout)
        + 6 * 512  # tokens
        + mha  # one attention module, used in both rounds
        + 2 * ffn  # ffn0, ffn1
        + 6 * ln(512)  # ln on queries 1, context, ffn0, queries 2, ffn1, output
        + decoders_shared
    )
    hsb = (
        lin(1024, 512) + ln(512)  # wsi_net: Linear, LN, ReLU, Dropout
        + 2 * lin(512, 256) + lin(256, 1)  # gated attention a, b, c
        + 2 * (lin(512, 512) + ln(512))  # hyper-attention W1, LN, W2, LN
        + mha + ln(512) + ffn  # token transformer: MHSA, LN before FFN, FFN
        + lin(512, 256) + ln(256)  # per-token head
        + lin(6 * 256, 4)  # classifier
    )
    assert cab + hsb == 15_120_389
    assert mha == 1_049_088  # the unused official module: ghanet.md's "~1.05M unused"
    assert cab + hsb + mha == 16_169_477  # ghanet.md: "about 16.17M + 513 * sum d_i"
    expected = cab + hsb + 513 * sum(BLCA_SIZES)  # decoder output layers 512 -> d_i (+ bias)
    model = create_model("ghanet", omic_sizes=BLCA_SIZES)
    assert sum(p.numel() for p in model.parameters()) == expected == 16_860_485


@pytest.mark.parametrize("n_patches", [1, 5, 257, 3000])
def test_shapes_eval(n_patches):
    model = create_model("ghanet", omic_sizes=SMALL_SIZES).eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(2, n_patches, 1024))
        single = model(wsi=torch.randn(n_patches, 1024))
    assert out.logits.shape == (2, 4) and single.logits.shape == (1, 4)
    assert torch.isfinite(out.logits).all()
    assert [r.shape for r in out.aux["recon"]] == [(2, d) for d in SMALL_SIZES]
    for key in ("incidence", "assoc_weights", "hyperedges"):
        assert out.aux[key].shape == (2, 6, n_patches)
    assert out.aux["morph_weights"].shape == (2, n_patches)


def official_order_forward(model: GHANet, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One bag [N, D] through the official code's sequence of operations, written out step by step.

    Transcribed from `Reconstruction_Net.forward` and `G_HANet_Surv.forward` (eval mode, no
    padding): its top-k threshold test (>= k-th largest) and additive -1e5 mask included.
    """
    cab = model.cab

    def attention(mod, x, context):  # [n, 512], [N, 512] -> out [n, 512], logits [4, n, N]
        def heads(t):
            return t.view(t.shape[0], 4, 128).transpose(0, 1)

        q, k, v = heads(mod.to_q(x)), heads(mod.to_k(context)), heads(mod.to_v(context))
        sim = q @ k.transpose(1, 2) * 128**-0.5
        return mod.to_out((sim.softmax(-1) @ v).transpose(0, 1).reshape(-1, 512)), sim

    def geglu_ffn(ffn, x):
        first, _, second, _ = ffn
        value, gate = first(x).chunk(2, dim=-1)
        return second(value * torch.nn.functional.gelu(gate))

    tokens = cab.tokens[0]
    context = cab.ln_context(torch.relu(cab.wsi_net[0](h)))
    r, _ = attention(cab.attn, cab.ln_query0(tokens), context)
    r = geglu_ffn(cab.ffn0, cab.ln_ffn0(r)) + r
    r, sim = attention(cab.attn, cab.ln_query1(tokens + r), context)
    r = geglu_ffn(cab.ffn1, cab.ln_ffn1(r)) + r
    g = cab.ln_out(r)
    recon = [decoder(g[i]) for i, decoder in enumerate(cab.decoders)]

    linear, norm = model.wsi_net[0], model.wsi_net[1]
    x = torch.relu(norm(linear(h)))
    edge1 = torch.softmax(model.gate(x).T, dim=1)
    matrix = sim.mean(dim=0)
    kth = torch.topk(matrix, k=int(x.shape[0] * 0.2), dim=1)[0][:, -1:]
    edge = (matrix >= kth).float()
    edge2 = torch.softmax(matrix + (1 - edge) * -100000, dim=1)
    p = ((edge1 + edge2) / 2) @ x
    w1, ln1, _, w2, ln2, _ = model.hyper_mlp
    y = torch.relu(ln2(w2(torch.relu(ln1(w1(p)))))) + p
    f = (y + g) / 2
    f = attention(model.attn, f, f)[0] + f
    f = geglu_ffn(model.ffn, model.ln_ffn(f)) + f
    w, ln, _, _ = model.head
    return model.classifier(torch.relu(ln(w(f))).reshape(1, -1)), recon


def test_matches_the_official_order_of_operations():
    model = small_model().eval()
    bag = torch.randn(50, SMALL_PATH)
    with torch.no_grad():
        out = model(wsi=bag)
        logits, recon = official_order_forward(model, bag)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-5)
    for mine, ref in zip(out.aux["recon"], recon, strict=True):
        torch.testing.assert_close(mine[0], ref, atol=1e-5, rtol=1e-5)


def test_decoder_sizes_follow_recon_masks():
    masks = [np.arange(d) % 2 == 0 for d in SMALL_SIZES]
    model = small_model(recon_masks=masks).eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(3, 7, SMALL_PATH))
    assert [r.shape[1] for r in out.aux["recon"]] == [int(m.sum()) for m in masks]


def test_inference_is_wsi_only():
    model = small_model().eval()
    wsi = torch.randn(2, 20, SMALL_PATH)
    with torch.no_grad():
        ref = model(wsi=wsi, omics=None).logits
        with_a = model(wsi=wsi, omics=random_omics(2)).logits
        with_b = model(wsi=wsi, omics=[100 * o for o in random_omics(2)]).logits
    assert torch.equal(ref, with_a) and torch.equal(ref, with_b)


def test_association_weights_carry_no_gradient():
    """E2 is detached: freezing it to constants leaves every gradient, incl. CAB's q/k, unchanged."""
    model = small_model(dropout=0.0).train()
    wsi = torch.randn(2, 30, SMALL_PATH)

    def grads():
        model.zero_grad()
        out = model(wsi=wsi)
        out.logits.sum().backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out, live = grads()
    assert not out.aux["assoc_weights"].requires_grad
    frozen = (out.aux["assoc_weights"].clone(), out.aux["hyperedges"].clone())
    model._association_weights = lambda logits, mask: frozen
    _, const = grads()
    assert live.keys() == const.keys()
    for name in ("cab.attn.to_q.weight", "cab.attn.to_k.weight"):
        assert live[name].abs().sum() > 0  # CAB still learns through the tokens G
        torch.testing.assert_close(live[name], const[name], rtol=0, atol=0)
    for name in live:
        torch.testing.assert_close(live[name], const[name], rtol=1e-6, atol=1e-7)


def test_incidence_rows_sum_to_one_and_topk_keeps_floor_fifth():
    sizes = [1, 4, 5, 9, 10, 257]
    model = small_model().eval()
    cab_logits = []
    model.cab.attn.register_forward_hook(lambda mod, args, output: cab_logits.append(output[1]))
    wsi, mask = padded_batch([torch.randn(n, SMALL_PATH) for n in sizes])
    with torch.no_grad():
        out = model(wsi=wsi, mask=mask)
    inc, assoc, edges = out.aux["incidence"], out.aux["assoc_weights"], out.aux["hyperedges"]
    torch.testing.assert_close(inc.sum(-1), torch.ones(len(sizes), 6))
    torch.testing.assert_close(assoc.sum(-1), torch.ones(len(sizes), 6))
    torch.testing.assert_close(out.aux["morph_weights"].sum(-1), torch.ones(len(sizes)))
    expected_k = torch.tensor([max(1, math.floor(0.2 * n)) for n in sizes])
    assert torch.equal(edges.sum(-1), expected_k[:, None].expand(-1, 6))
    assert not (edges & ~mask[:, None, :]).any()  # padding never joins a hyperedge
    assert (assoc[~edges] == 0).all() and (inc[~mask[:, None, :].expand_as(inc)] == 0).all()
    head_mean = cab_logits[-1].mean(dim=1)  # round-2 logits, averaged over the 4 heads
    for b, n in enumerate(sizes):
        m, e = head_mean[b, :, :n], edges[b, :, :n]
        kept_min = m.masked_fill(~e, float("inf")).min(-1).values
        dropped_max = m.masked_fill(e, float("-inf")).max(-1).values
        assert (kept_min >= dropped_max).all()  # the kept patches are each token's top-k
        torch.testing.assert_close(assoc[b, :, :n], torch.softmax(m.masked_fill(~e, float("-inf")), -1))


def test_reconstruction_loss_values():
    masks = [np.arange(d) < 2 for d in SMALL_SIZES]
    model = small_model(recon_masks=masks)
    omics = random_omics(3)
    targets = [o[:, :2] for o in omics]
    exact = model.extra_loss(SurvivalOutput(torch.zeros(3, 4), {"recon": targets}), omics)
    assert exact.shape == (3,)
    torch.testing.assert_close(exact, torch.zeros(3), atol=1e-6, rtol=0)
    flipped = model.extra_loss(SurvivalOutput(torch.zeros(3, 4), {"recon": [-t for t in targets]}), omics)
    # cos = -1 gives SCE (1 - (-1))^3 = 8; MSE of -y vs y is mean(4 y^2); weight 0.3.
    expected = 0.3 * sum(8.0 + (4 * t.pow(2)).mean(-1) for t in targets)
    torch.testing.assert_close(flipped, expected)
    with pytest.raises(ValueError, match="group 0 has 4 features"):
        model.extra_loss(SurvivalOutput(torch.zeros(3, 4), {"recon": targets}), [torch.randn(3, 4)] + omics[1:])


def test_padded_batch_matches_each_bag_alone():
    model = small_model().eval()
    bags = [torch.randn(n, SMALL_PATH) for n in (3, 40, 17)]
    wsi, mask = padded_batch(bags)  # NaN padding: any leak would poison the result
    with torch.no_grad():
        batched = model(wsi=wsi, mask=mask)
        for i, bag in enumerate(bags):
            alone = model(wsi=bag)
            torch.testing.assert_close(batched.logits[i : i + 1], alone.logits, atol=1e-5, rtol=0)
            for r_b, r_a in zip(batched.aux["recon"], alone.aux["recon"]):
                torch.testing.assert_close(r_b[i : i + 1], r_a, atol=1e-5, rtol=0)


def test_padded_batch_gradient_equals_sum_of_per_bag_gradients():
    model = small_model(dropout=0.0).train()
    bags = [torch.randn(n, SMALL_PATH) for n in (6, 25, 11)]
    omics = random_omics(3)
    bins, cens = torch.tensor([0, 2, 3]), torch.tensor([0.0, 1.0, 0.0])

    def loss_of(out, om, b, c):
        return (nll_loss(out.logits, b, c) + model.extra_loss(out, om)).sum()

    model.zero_grad()
    wsi, mask = padded_batch(bags, fill=0.0)
    loss_of(model(wsi=wsi, mask=mask), omics, bins, cens).backward()
    batched = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for i, bag in enumerate(bags):
        om = [o[i : i + 1] for o in omics]
        loss_of(model(wsi=bag), om, bins[i : i + 1], cens[i : i + 1]).backward()
    for name, p in model.named_parameters():
        if name != "gate.attention_c.bias":  # softmax is shift-invariant: that bias never gets gradient
            assert batched[name].abs().sum() > 0, name
        torch.testing.assert_close(batched[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_runs_under_bf16_autocast():
    """The trainer's bf16 mode: softmaxes and the reconstruction loss stay in float32."""
    model = small_model(dropout=0.0)
    wsi, mask = padded_batch([torch.randn(n, SMALL_PATH) for n in (20, 9)], fill=0.0)
    with torch.no_grad():
        reference = model.eval()(wsi=wsi, mask=mask).logits
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(wsi=wsi, mask=mask)
        extra = model.extra_loss(out, random_omics(2))
    assert extra.dtype == torch.float32 and torch.isfinite(extra).all()
    torch.testing.assert_close(out.logits.float(), reference, atol=0.05, rtol=0)
    (out.logits.float().sum() + extra.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_same_seed_same_logits():
    wsi = torch.randn(2, 12, SMALL_PATH)

    def logits(seed):
        torch.manual_seed(seed)
        model = small_model().eval()
        with torch.no_grad():
            return model(wsi=wsi).logits

    assert torch.equal(logits(1), logits(1))
    assert not torch.equal(logits(1), logits(2))


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="recon_masks"):
        small_model(recon_masks=[np.ones(d, bool) for d in SMALL_SIZES[:5]] + [np.ones(2, bool)])
    with pytest.raises(ValueError, match="recon_masks"):
        small_model(recon_masks=[np.ones(d, bool) for d in SMALL_SIZES[:5]] + [np.zeros(8, bool)])
    model = small_model().eval()
    with pytest.raises(ValueError, match="at least one real patch"):
        model(wsi=torch.randn(2, 4, SMALL_PATH), mask=torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="needs `wsi`"):
        model(omics=random_omics(1))


# ---- prepare(): the per-fold Welch t-test filter ----------------------------------------------


def risk_cohort(rng, n=120):
    bins = rng.integers(0, 4, n)
    event = rng.random(n) < 0.6
    return bins, event


def test_prepare_keeps_the_differential_feature(rng):
    bins, event = risk_cohort(rng)
    high = event & (bins < 2)
    omics = [rng.normal(size=(len(bins), d)) for d in (5, 3, 4, 2, 6, 3)]
    omics[0][:, 2] += 2.0 * high  # clearly higher in high-risk patients
    masks = GHANet.prepare(omics, bins, event)["recon_masks"]
    assert len(masks) == 6
    assert [m.shape for m in masks] == [(d,) for d in (5, 3, 4, 2, 6, 3)]
    assert all(m.dtype == bool and m.any() for m in masks)
    assert masks[0][2]
    again = GHANet.prepare(omics, bins, event)["recon_masks"]
    assert all(np.array_equal(a, b) for a, b in zip(masks, again))
    model = create_model("ghanet", path_dim=SMALL_PATH, omic_sizes=(5, 3, 4, 2, 6, 3), recon_masks=masks)
    assert [decoder[-1].out_features for decoder in model.cab.decoders] == [int(m.sum()) for m in masks]


def test_prepare_risk_groups():
    """High = uncensored bins 0-1, low = all of bins 2-3, censored bins 0-1 dropped.

    f0 differs only in censored bins 0-1 (kept if they were wrongly counted in either group);
    f1 differs only in censored bins 2-3 (dropped if they were wrongly left out of low risk).
    """
    a = np.linspace(-1, 1, 8)
    groups = {"high": (0, True), "cens_low_bin": (1, False), "low_event": (2, True), "low_cens": (3, False)}
    f0 = {"high": a, "cens_low_bin": a + 10, "low_event": a, "low_cens": a}
    f1 = {"high": a, "cens_low_bin": a, "low_event": a, "low_cens": a + 5}
    bins = np.concatenate([np.full(8, groups[g][0]) for g in groups])
    event = np.concatenate([np.full(8, groups[g][1]) for g in groups])
    table = np.column_stack([np.concatenate([f[g] for g in groups]) for f in (f0, f1)])
    omics = [table] * 6
    masks = GHANet.prepare(omics, bins, event)["recon_masks"]
    for m in masks:
        assert m.tolist() == [False, True]


def test_prepare_fallbacks_never_leave_a_group_empty():
    bins = np.repeat([0, 1, 2, 3], 6)
    event = np.ones(24, bool)
    a = np.tile(np.linspace(-1, 1, 6), 4)  # identical in both risk groups: p = 1
    close = np.concatenate([np.linspace(-1, 1, 12), np.linspace(-1.3, 1.5, 12)])  # 0.05 < p < 1
    none_significant = np.column_stack([a, close, np.zeros(24)])  # p = 1, then p < 1, then NaN (constant)
    constant = np.ones((24, 2))
    omics = [none_significant, constant, none_significant, constant, none_significant, constant]
    masks = GHANet.prepare(omics, bins, event)["recon_masks"]
    assert masks[0].tolist() == [False, True, False]  # the single smallest-p feature
    assert masks[1].tolist() == [True, True]  # no defined p anywhere: keep the whole group


def test_prepare_rejects_mismatched_rows(rng):
    with pytest.raises(ValueError, match="one row per patient"):
        GHANet.prepare([rng.normal(size=(10, 2))] * 6, np.zeros(9, int), np.ones(9, bool))
