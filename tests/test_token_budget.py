"""--max-tokens: micro-batches cut by padded patches change memory and, without dropout, never the maths
(fit and predict); with dropout they draw other masks, so the sweep records them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.train
from bench.fold import PatientSet
from bench.train import TrainSettings, _chunks, fit, predict

SHIFT_INVARIANT = {"attention.attention_c.bias"}  # zero gradient in exact arithmetic (see test_train)


pytestmark = pytest.mark.usefixtures("one_thread")


def patients(n: int = 20, seed: int = 0, dim: int = 16) -> PatientSet:
    rng = np.random.default_rng(seed)
    time = rng.uniform(1.0, 100.0, n)
    return PatientSet(
        case_ids=[f"P{i:03d}" for i in range(n)], time=time, event=np.tile([1, 0, 1, 1], n // 4 + 1)[:n],
        bins=np.digitize(time, [25.0, 50.0, 75.0]),
        omics=[rng.standard_normal((n, d)).astype(np.float32) for d in (3, 4, 5, 3, 4, 3)],
        bags=[rng.standard_normal((int(rng.integers(3, 25)), dim)).astype(np.float32) for _ in range(n)],
    )


def test_chunks_keep_padded_patches_under_the_budget():
    pset = patients()
    sizes = pset.bag_sizes()
    idx = np.arange(len(pset))
    cut = _chunks(pset, idx, 8, max_tokens=40)
    assert sorted(np.concatenate(cut).tolist()) == idx.tolist()
    assert all(len(c) <= 8 and (len(c) == 1 or len(c) * sizes[c].max() <= 40) for c in cut)
    assert any(1 < len(c) < 8 for c in cut), "the budget never bound: the test would pass without it"
    assert [c.tolist() for c in _chunks(pset, idx, 8)] == [c.tolist() for c in _chunks(pset, idx, 8, 10**6)]
    assert all(len(c) == 1 for c in _chunks(pset, idx, 8, max_tokens=1))  # a bag over the budget travels alone


def test_token_budget_gives_the_parameters_and_predictions_of_one_by_one(monkeypatch):
    """Same maths as patient by patient; and fit and predict both hand the model batches within the budget."""
    train, test = patients(), patients(n=13, seed=1)
    padded = []
    real_collate = bench.train.collate

    def collate(pset, idx, *args, **kwargs):
        padded.append((len(idx), len(idx) * max(len(pset.bags[i]) for i in idx)))
        return real_collate(pset, idx, *args, **kwargs)

    monkeypatch.setattr(bench.train, "collate", collate)
    common = dict(lr=2e-4, epochs=2, grad_accum=8, seed=3)
    budget = fit("abmil", train, {"dropout": 0.0}, TrainSettings(**common, micro_batch=8, max_tokens=40))
    assert padded and all(n == 1 or tokens <= 40 for n, tokens in padded) and max(n for n, _ in padded) > 1
    single = fit("abmil", train, {"dropout": 0.0}, TrainSettings(**common, micro_batch=1))
    a, b = budget.model.state_dict(), single.model.state_dict()
    for key in a.keys() - SHIFT_INVARIANT:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=f"abmil.{key} differs")
    np.testing.assert_allclose(budget.train_loss, single.train_loss, rtol=1e-5)
    cols = [f"S_{k}" for k in range(1, 5)]
    alone = predict(budget.model, test, TrainSettings(max_tokens=1))[cols].to_numpy()  # every bag in its own batch
    padded.clear()
    within = predict(budget.model, test, TrainSettings(max_tokens=40))[cols].to_numpy()
    assert all(n == 1 or tokens <= 40 for n, tokens in padded) and max(n for n, _ in padded) > 1
    np.testing.assert_allclose(within, alone, atol=1e-6)
    np.testing.assert_allclose(predict(budget.model, test, TrainSettings())[cols].to_numpy(), alone, atol=1e-6)


def test_with_dropout_the_grouping_changes_the_numbers_so_the_sweep_records_it():
    """Regrouped bags draw other dropout masks: micro-batch and token budget are result settings (tags micro_batch,
    max_tokens; bench.jobs.setting_tags), not speed settings, once dropout is on."""
    train, test = patients(), patients(n=13, seed=1)
    common = dict(lr=2e-4, epochs=2, grad_accum=8, seed=3)
    cols = [f"S_{k}" for k in range(1, 5)]
    risks = [predict(fit("abmil", train, {"dropout": 0.25}, TrainSettings(**common, **grouping)).model, test,
                     TrainSettings())[cols].to_numpy() for grouping in ({"micro_batch": 8}, {"micro_batch": 1},
                                                                         {"micro_batch": 8, "max_tokens": 40})]
    assert np.abs(risks[0] - risks[1]).max() > 1e-4 and np.abs(risks[0] - risks[2]).max() > 1e-4
