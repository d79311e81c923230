"""CMTA pins the reference's layer list, its Nystrom configuration, its L1 terms, per-cohort alpha under the paper
protocol and a tuned one under the nested, and SGD. That a padded batch equals each bag alone is checked in
test_batching.py."""

import optuna
import pytest
import torch
from torch import nn

from bench.train import TrainSettings, make_optimizer
from models import create_model, get_model_class
from models.cmta import REFERENCE_ALPHA
from models.nystrom import NystromAttention

BLCA = (94, 334, 521, 468, 1496, 479)


def test_parameter_count_from_the_layer_list():
    d = 256
    translayer = 2 * d + d * 3 * d + d * d + d + 8 * 33  # LayerNorm, to_qkv (no bias), to_out, res_conv
    path_transformer = d + 2 * translayer + (d * 49 + d) + (d * 25 + d) + (d * 9 + d) + 2 * d  # cls, PPEG, norm
    gene_transformer = d + 2 * translayer + 2 * d
    expected = (
        1024 * d + d + d * d + d  # pathomics fc
        + sum(s * 1024 + 1024 for s in BLCA) + 6 * (1024 * d + d)  # SNN blocks d_i -> 1024 -> 256
        + 2 * path_transformer + 2 * gene_transformer  # encoders and decoders
        + 2 * (3 * d * d + 3 * d + d * d + d)  # P->G and G->P attention, one head
        + 2 * d * d + d + d * d + d  # concat fusion
        + d * 4 + 4  # classifier
    )
    model = create_model("cmta", omic_sizes=BLCA)
    assert sum(p.numel() for p in model.parameters()) == expected == 8_259_140


def test_nystrom_layers_are_the_fast_path_module_at_width_256():
    model = create_model("cmta")
    layers = [m for m in model.modules() if isinstance(m, NystromAttention)]
    assert len(layers) == 8
    for attn in layers:
        assert (attn.heads, attn.num_landmarks, attn.pinv_iterations) == (8, 128, 6)
        assert attn.residual and attn.to_out[1].p == 0.1 and attn.to_qkv.out_features == 3 * 256
    assert not model.batchable


def test_reference_initialisation():
    model = create_model("cmta")
    assert model.classifier.bias.abs().sum() == 0 and model.p_in_g.out_proj.bias.abs().sum() == 0
    assert model.pathomics_encoder.cls_token.abs().max() < 1e-4
    w = model.mm[0].weight  # xavier-normal: std sqrt(2 / (fan_in + fan_out))
    assert abs(w.std().item() - (2 / (512 + 256)) ** 0.5) < 0.002


@pytest.mark.parametrize("n", [1, 5, 200])  # 200 patches: 226 tokens, above the 128 landmarks
def test_unbatched_bag_shapes(n):
    model = create_model("cmta", omic_sizes=BLCA).eval()
    with torch.no_grad():
        out = model(wsi=torch.randn(n, 1024), omics=[torch.randn(s) for s in BLCA])
    assert out.logits.shape == (1, 4) and torch.isfinite(out.logits).all()
    assert all(out.aux[k].shape == (1, 256) for k in ("path_encoder", "path_decoder", "gene_encoder", "gene_decoder"))


def test_extra_loss_is_alpha_times_the_reference_l1_terms_with_the_encoder_detached():
    model = create_model("cmta", omic_sizes=BLCA, sim_alpha=3.0).eval()
    out = model(wsi=torch.randn(2, 9, 1024), omics=[torch.randn(2, s) for s in BLCA])
    extra = model.extra_loss(out, None)
    a, l1 = out.aux, nn.L1Loss()
    for i in range(2):  # the reference's nn.L1Loss on one patient's [1, 256] tokens
        expected = 3.0 * (l1(a["path_encoder"][i : i + 1].detach(), a["path_decoder"][i : i + 1])
                          + l1(a["gene_encoder"][i : i + 1].detach(), a["gene_decoder"][i : i + 1]))
        torch.testing.assert_close(extra[i], expected)
    # the encoder cls tokens get no gradient from the L1 terms
    enc = [a["path_encoder"], a["gene_encoder"]]
    grads = torch.autograd.grad(extra.sum(), enc + [a["path_decoder"]], allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[2].abs().sum() > 0


def test_paper_params_carry_sgd_and_the_cohorts_alpha():
    cls = get_model_class("cmta")
    assert REFERENCE_ALPHA == {"blca": 1.0, "brca": 100.0, "gbmlgg": 1.0, "luad": 1e-4, "ucec": 1.0}
    for cohort, alpha in REFERENCE_ALPHA.items():
        params = cls.paper_params(cohort)
        assert params["sim_alpha"] == alpha and params["optimizer"] == "sgd" and params["lr"] == 1e-3
    assert cls.paper_params("other")["sim_alpha"] == 0.5  # the reference's default --alpha
    assert get_model_class("mcat").paper_params("brca") == get_model_class("mcat").paper_defaults


def test_nested_search_space_tunes_alpha_over_the_references_range_and_overrides_the_cohorts_value():
    """The per-cohort alpha was chosen by the reference's authors with these splits' val folds: the nested protocol
    must choose its own. The study's alpha is log-uniform over [1e-4, 100], and tune() lays it over paper_params."""
    cls = get_model_class("cmta")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    space = cls.search_space(trial)
    assert trial.distributions["sim_alpha"] == optuna.distributions.FloatDistribution(1e-4, 100.0, log=True)
    assert 1e-4 <= space["sim_alpha"] <= 100.0
    tuned = {**cls.paper_params("luad"), **space}  # what bench.tune hands the refit: base overlaid by the trial
    assert tuned["sim_alpha"] == space["sim_alpha"] != REFERENCE_ALPHA["luad"]
    assert "run.sh's per-cohort alpha" in cls.PAPER_PARAMS_NOTE


def test_trainer_builds_the_optimizer_the_params_name():
    model = create_model("cmta")
    opt = make_optimizer(model, TrainSettings.from_params(get_model_class("cmta").paper_params("blca")))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 1e-5
    mcat = make_optimizer(model, TrainSettings.from_params(get_model_class("mcat").paper_params("blca")))
    assert isinstance(mcat, torch.optim.Adam)
    with pytest.raises(ValueError, match="'rmsprop'"):
        make_optimizer(model, TrainSettings(optimizer="rmsprop"))
