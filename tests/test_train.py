"""Trainer: micro-batching is a speed setting only, balanced sampling, prediction table, failures, determinism.

Tiny in-memory patient sets (16-d patch features, small genomic groups) keep every fit well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import train as train_mod
from bench.fold import PatientSet
from bench.survival import c_index, nll_loss
from bench.train import TrainingError, TrainSettings, balanced_draws, build_model, fit, model_kwargs, predict, score
from models import SurvivalOutput, get_model_class

OMIC_SIZES = (3, 4, 5, 3, 4, 3)
SHIFT_INVARIANT = {"attention.attention_c.bias"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_set(n: int = 20, seed: int = 0, dim: int = 16, with_truth: bool = True) -> PatientSet:
    """Patients with bags of unequal length (so micro-batches are padded) and every (bin, event) stratum."""
    rng = np.random.default_rng(seed)
    time = rng.uniform(1.0, 100.0, n)
    event = np.tile([1, 0, 1, 1], n // 4 + 1)[:n]
    bins = np.digitize(time, [25.0, 50.0, 75.0])
    return PatientSet(
        case_ids=[f"P{i:03d}" for i in range(n)], time=time, event=event, bins=bins,
        omics=[rng.standard_normal((n, d)).astype(np.float32) for d in OMIC_SIZES],
        bags=[rng.standard_normal((int(rng.integers(3, 25)), dim)).astype(np.float32) for _ in range(n)],
        truth=rng.standard_normal(n) if with_truth else None,
    )


def params_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name, params, micro", [
    ("abmil", {"dropout": 0.0}, 8),
    ("snn", {"dropout": 0.0, "l1_reg": 1e-4}, 8),  # the L1 term is added once per patient in either layout
    ("transmil", {"dropout": 0.0, "dim": 64}, 8),  # not batchable: micro_batch must be ignored, never padded
])
def test_micro_batched_step_equals_one_by_one(name, params, micro):
    """Same seed, same draws: padded micro-batches give the parameters of patient-by-patient accumulation.

    20 patients with grad_accum 8 over 2 epochs also covers the partial step carried into the next epoch.
    The gated attention's last bias is left out: the softmax ignores a shift shared by all patches, so
    its gradient is zero in exact arithmetic, and Adam scales the float noise of either order up to
    steps of about `lr`.
    """
    train = tiny_set()
    settings = dict(lr=2e-4, epochs=2, grad_accum=8, seed=3)
    batched = fit(name, train, params, TrainSettings(**settings, l1_reg=params.get("l1_reg", 0.0), micro_batch=micro))
    single = fit(name, train, params, TrainSettings(**settings, l1_reg=params.get("l1_reg", 0.0), micro_batch=1))
    initial = params_of(build_model(name, model_kwargs(name, train, params), seed=3))
    a, b = params_of(batched.model), params_of(single.model)
    assert a.keys() == b.keys()
    for key in a.keys() - SHIFT_INVARIANT:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=f"{name}.{key} differs")
    assert any(not torch.equal(a[k], initial[k]) for k in a), "training changed no parameter"
    np.testing.assert_allclose(batched.train_loss, single.train_loss, rtol=1e-5)


def cut_cost(sizes, runs, pass_cost) -> float:
    return sum((b - a) * sizes[b - 1] + pass_cost for a, b in runs)


def test_runs_are_the_cheapest_cut_of_the_sorted_bags():
    """The dynamic programme against every way to cut the sorted bags (2^(n-1) of them), under `size` and `max_tokens`."""
    rng = np.random.default_rng(4)
    for _ in range(60):
        n = int(rng.integers(1, 10))
        sizes = np.sort(rng.integers(1, 200, n))
        size, pass_cost = int(rng.integers(1, 9)), float(rng.choice([0.5, 16, 64, 1e4]))
        max_tokens = int(rng.choice([0, 150, 400]))
        runs = train_mod._runs(sizes, size, max_tokens or None, pass_cost)
        assert [a for a, _ in runs] == [0] + [b for _, b in runs[:-1]] and runs[-1][1] == n  # contiguous, covering
        best = float("inf")
        for mask in range(2 ** (n - 1)):
            cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
            cand = list(zip(cuts[:-1], cuts[1:]))
            if all(b - a <= size and (b - a == 1 or not max_tokens or (b - a) * sizes[b - 1] <= max_tokens) for a, b in cand):
                best = min(best, cut_cost(sizes, cand, pass_cost))
        assert all(b - a <= size and (b - a == 1 or not max_tokens or (b - a) * sizes[b - 1] <= max_tokens) for a, b in runs)
        assert cut_cost(sizes, runs, pass_cost) == pytest.approx(best)


def test_chunks_cut_a_long_bag_off_on_a_cpu_and_keep_the_fewest_passes_elsewhere():
    train = tiny_set(n=8)
    train.bags = [np.zeros((3, 16), np.float32)] * 7 + [np.zeros((200, 16), np.float32)]
    idx = np.arange(8)[::-1].copy()
    cpu = train_mod._chunks(train, idx, 8, pass_cost=get_model_class("abmil").cpu_pass_cost)
    assert [sorted(c.tolist()) for c in cpu] == [list(range(7)), [7]]  # 7 x 3 + 200 + 2 passes, not 8 x 200 + 1 pass
    assert [sorted(c.tolist()) for c in train_mod._chunks(train, idx, 8)] == [list(range(8))]
    assert [len(c) for c in train_mod._chunks(train, idx, 3)] == [3, 3, 2]  # 3 passes; the long bag pads one short bag
    assert train_mod._pass_cost(get_model_class("abmil"), TrainSettings()) == 64.0
    assert train_mod._pass_cost(get_model_class("mcat"), TrainSettings()) is None  # measured: cutting gained nothing
    assert train_mod._pass_cost(get_model_class("abmil"), TrainSettings(device="cuda")) is None  # not measured there


def test_a_fit_with_passes_cut_by_padding_equals_one_by_one(monkeypatch):
    """At a pass cost of one patch every step is cut into several padded passes; the sum, hence the fit, is the same."""
    calls = []
    real = train_mod._chunks
    monkeypatch.setattr(get_model_class("abmil"), "cpu_pass_cost", 1.0)
    monkeypatch.setattr(train_mod, "_chunks", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    train, params = tiny_set(), {"dropout": 0.0}
    settings = dict(lr=2e-4, epochs=2, grad_accum=8, seed=3)
    cut = fit("abmil", train, params, TrainSettings(**settings, micro_batch=8))
    assert any(1 < len(c) < 8 for chunks in calls for c in chunks) and max(map(len, calls)) > 1
    single = fit("abmil", train, params, TrainSettings(**settings, micro_batch=1))
    a, b = params_of(cut.model), params_of(single.model)
    for key in a.keys() - SHIFT_INVARIANT:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=f"abmil.{key} differs")
    np.testing.assert_allclose(cut.train_loss, single.train_loss, rtol=1e-5)


@pytest.mark.parametrize("name", ["abmil", "mcat", "ghanet"])
def test_passes_cut_by_padding_give_the_outputs_and_gradients_of_one_by_one(name):
    """One step's patients in cut padded passes against one pass per patient: logits and every parameter's gradient.

    Gradients, not fitted parameters: mcat and ghanet feed Linear layers into LayerNorm, whose output ignores
    a shift of all features, so some gradient components are zero in exact arithmetic and Adam would scale
    their float noise of either order up to steps of about `lr`.
    """
    train, params = tiny_set(n=12, seed=5), {"dropout": 0.0}
    cls = get_model_class(name)
    model = build_model(name, model_kwargs(name, train, params), seed=3).train()
    step = np.array([0, 3, 5, 6, 7, 9, 10, 11])

    def run(chunks):
        model.zero_grad(set_to_none=True)
        logits = {}
        for mb in chunks:
            wsi, mask, omics = train_mod.collate(train, mb, cls, "cpu", for_training=True)
            out = model(wsi=wsi, mask=mask, omics=omics)
            loss = nll_loss(out.logits, torch.as_tensor(train.bins[mb]), torch.as_tensor(1.0 - train.event[mb]).float())
            extra = model.extra_loss(out, omics)
            (loss if extra is None else loss + extra).sum().backward()
            logits.update(zip(mb.tolist(), out.logits.detach()))
        return logits, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    chunks = train_mod._chunks(train, step, 8, pass_cost=1.0)
    assert sorted(np.concatenate(chunks).tolist()) == step.tolist() and any(len(c) > 1 for c in chunks) and len(chunks) > 1
    cut_logits, cut_grads = run(chunks)
    one_logits, one_grads = run([step[i : i + 1] for i in range(len(step))])
    for i in step.tolist():
        torch.testing.assert_close(cut_logits[i], one_logits[i], atol=1e-5, rtol=1e-5)
    assert cut_grads.keys() == one_grads.keys() and len(cut_grads) > 4
    for key, g in one_grads.items():
        torch.testing.assert_close(cut_grads[key], g, atol=1e-5 * max(1.0, g.abs().max().item()), rtol=1e-4,
                                   msg=f"{name}.{key} gradient differs")


def test_balanced_draws_with_replacement_equalise_strata():
    """N draws per epoch, with replacement; each (bin, censorship) stratum gets the same mass in expectation."""
    bins = np.array([0] * 10 + [0] * 2 + [2] * 5 + [3] * 3)
    event = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3)  # bin 0 holds two strata: dead and censored
    strata = 2 * bins + (1 - event)
    epochs = balanced_draws(bins, event, 600, torch.Generator().manual_seed(0))
    assert len(epochs) == 600 and all(len(d) == len(bins) for d in epochs)
    assert any(len(set(d.tolist())) < len(d) for d in epochs), "no epoch repeats a patient: not with replacement"
    drawn = np.concatenate(epochs)
    share = np.bincount(strata[drawn], minlength=8)[np.unique(strata)] / len(drawn)
    np.testing.assert_allclose(share, 0.25, atol=0.03)  # 4 strata of sizes 10, 2, 5, 3
    big = drawn[strata[drawn] == strata[0]]  # within a stratum, patients are equally likely
    np.testing.assert_allclose(np.bincount(big, minlength=10)[:10] / len(big), 0.1, atol=0.03)
    again = balanced_draws(bins, event, 600, torch.Generator().manual_seed(0))
    assert all(np.array_equal(x, y) for x, y in zip(epochs, again))


def test_predict_table_columns_and_row_order():
    """Documented columns; risk = -sum S; rows stay in patient order although micro-batches are size-sorted."""
    train, test = tiny_set(seed=0), tiny_set(n=13, seed=1)
    settings = TrainSettings(epochs=1, grad_accum=8, micro_batch=8)
    model = fit("abmil", train, {"dropout": 0.25}, settings).model
    pred = predict(model, test, settings, split="test")
    assert list(pred.columns) == ["case_id", "split", "time", "event", "bin", "risk", "S_1", "S_2", "S_3", "S_4", "true_risk"]
    assert pred["case_id"].tolist() == test.case_ids and set(pred["split"]) == {"test"}
    np.testing.assert_array_equal(pred["time"], test.time)
    np.testing.assert_array_equal(pred["event"], test.event)
    np.testing.assert_array_equal(pred["bin"], test.bins)
    np.testing.assert_array_equal(pred["true_risk"], test.truth)
    surv = pred[["S_1", "S_2", "S_3", "S_4"]].to_numpy()
    np.testing.assert_allclose(pred["risk"], -surv.sum(axis=1), rtol=1e-12)
    assert np.all(np.diff(surv, axis=1) <= 0) and np.all((surv > 0) & (surv < 1))
    for i in (0, 5, 12):  # each row is that patient's own curve
        alone = predict(model, test.subset([i]), settings)
        np.testing.assert_allclose(surv[i], alone[["S_1", "S_2", "S_3", "S_4"]].to_numpy()[0], atol=1e-6)
    assert predict(model, tiny_set(n=5, with_truth=False), settings)["true_risk"].isna().all()


def test_nan_loss_raises_training_error(monkeypatch):
    cls = get_model_class("abmil")
    real = cls.forward

    def nan_forward(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        return SurvivalOutput(out.logits * float("nan"), out.aux)

    monkeypatch.setattr(cls, "forward", nan_forward)
    with pytest.raises(TrainingError, match="abmil: non-finite loss at epoch 0"):
        fit("abmil", tiny_set(), {"dropout": 0.25}, TrainSettings(epochs=1, grad_accum=8))


def test_same_seed_same_c_index():
    """Dropout and sampling are seeded: the same seed reproduces the C-index exactly; another seed does not train alike."""
    train, test = tiny_set(seed=0), tiny_set(n=16, seed=2)
    runs = [fit("abmil", train, {"dropout": 0.25}, TrainSettings(lr=1e-3, epochs=2, grad_accum=8, seed=s)) for s in (5, 5, 6)]
    settings = TrainSettings()
    c = [score(r.model, test, settings) for r in runs]
    assert c[0] == c[1] and 0.0 <= c[0] <= 1.0
    pred = predict(runs[0].model, test, settings)
    assert c[0] == c_index(pred["time"], pred["event"], pred["risk"])
    assert runs[0].train_loss == runs[1].train_loss
    assert runs[0].train_loss != runs[2].train_loss


def test_loss_curves_split_the_nll_from_the_models_extra_loss():
    """G-HANet's reconstruction term is its own curve; train_loss stays their sum; ABMIL has no extra curve."""
    train = tiny_set()
    settings = TrainSettings(epochs=2, grad_accum=8, micro_batch=8)
    ghanet = fit("ghanet", train, {}, settings)
    assert len(ghanet.loss_nll) == len(ghanet.loss_aux) == len(ghanet.train_loss) == 2
    assert all(a > 0 for a in ghanet.loss_aux)
    np.testing.assert_allclose(ghanet.train_loss, np.add(ghanet.loss_nll, ghanet.loss_aux), rtol=1e-6)
    abmil = fit("abmil", train, {"dropout": 0.25}, settings)
    assert abmil.loss_aux == [] and abmil.loss_nll == abmil.train_loss and len(abmil.loss_nll) == 2
