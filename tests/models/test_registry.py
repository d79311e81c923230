"""The registry's face: names, clear errors, and the contract every registered model keeps."""

import optuna
import pandas as pd
import pytest
import torch

from models import (CLINICAL, DEFAULT_MODELS, DEFAULT_OMIC_SIZES, ModelError, OMICS, WSI, SurvivalEstimator, SurvivalModel,
                    create_model, get_model_class, list_models, reads_slides, select_models)
from models.base import OPTIM_KEYS, REFERENCE_OPTIM


NETWORKS = [name for name in list_models() if not get_model_class(name).estimator]  # the rest never run forward


def _bag(n=6, batch=1):
    gen = torch.Generator().manual_seed(0)
    wsi = torch.randn(batch, n, 1024, generator=gen)
    return wsi, [torch.randn(batch, s, generator=gen) for s in DEFAULT_OMIC_SIZES]


def _model_kwargs(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in OPTIM_KEYS}


def test_the_baselines_are_registered():
    assert {"abmil", "snn", "transmil", "mcat"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_the_default_five_and_the_extended_rest_partition_the_registry():
    assert select_models("default") == sorted(DEFAULT_MODELS) == ["abmil", "ghanet", "mcat", "snn", "transmil"]
    assert {"abmil_snn", "clam_sb", "coxnet"} <= set(select_models("extended"))
    assert sorted(select_models("default") + select_models("extended")) == select_models("all") == list_models()
    with pytest.raises(ModelError, match="extended"):
        select_models("everything")


def test_an_estimator_search_space_gives_only_its_own_keys():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = get_model_class("coxnet").search_space(trial)
    assert set(params) == {"alpha_ratio", "l1_ratio"} and not set(params) & OPTIM_KEYS
    assert create_model("coxnet", **params).alpha_ratio == params["alpha_ratio"]


def test_unknown_name_is_refused_with_the_registered_names():
    with pytest.raises(ModelError) as err:
        create_model("resnet_mil")
    message = str(err.value)
    assert "resnet_mil" in message
    assert all(name in message for name in list_models())


@pytest.mark.parametrize("sizes", [(94, 334, 521), (1, 2, 3, 4, 5, 6, 7), (94, 334, 521, 468, 1496, 0)])
def test_wrong_omic_sizes_are_refused(sizes):
    with pytest.raises(ModelError, match="6 positive group sizes"):
        create_model("mcat", omic_sizes=sizes)


@pytest.mark.parametrize("name", list_models())
def test_class_declares_the_contract(name):
    cls = get_model_class(name)
    assert issubclass(cls, SurvivalEstimator if cls.estimator else SurvivalModel) and cls.name == name
    assert cls.infer_modalities <= cls.train_modalities <= {WSI, OMICS, CLINICAL}
    assert cls.infer_modalities
    assert (CLINICAL in cls.train_modalities) == bool(cls.clinical_columns)
    assert cls.estimator or set(REFERENCE_OPTIM) <= set(cls.paper_defaults)
    prepared = {}
    if cls.clinical_columns:  # what its prepare() fits on a training side
        frame = pd.DataFrame({"age": [50, 60, 70], "is_female": [0, 1, 1], "oncotree_code": ["A", "B", "A"],
                              "site": ["S1", "S1", "S2"]})
        prepared = cls.prepare([], None, None, clinical=frame)
    model = create_model(name, **_model_kwargs(cls.paper_defaults), **prepared)
    assert isinstance(model, cls)


@pytest.mark.parametrize("name", NETWORKS)
def test_search_space_builds_a_model(name):
    cls = get_model_class(name)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = cls.search_space(trial)
    assert params and set(params) == set(trial.params)
    model = create_model(name, **_model_kwargs(params))
    wsi, omics = _bag()
    with torch.no_grad():
        assert model.eval()(wsi=wsi, omics=omics).logits.shape == (1, 4)


@pytest.mark.parametrize("name", NETWORKS)
def test_inference_uses_only_the_declared_modalities(name):
    cls = get_model_class(name)
    model = create_model(name).eval()
    wsi, omics = _bag()
    with torch.no_grad():
        full = model(wsi=wsi, omics=omics).logits
        if OMICS in cls.infer_modalities:
            with pytest.raises(ValueError, match="omics"):
                model(wsi=wsi, omics=None)
        else:
            torch.testing.assert_close(model(wsi=wsi, omics=None).logits, full)
        if WSI in cls.infer_modalities:
            with pytest.raises(ValueError, match="wsi"):
                model(wsi=None, omics=omics)
        else:
            torch.testing.assert_close(model(wsi=None, omics=omics).logits, full)


@pytest.mark.parametrize("name", NETWORKS)
def test_same_seed_gives_same_logits(name):
    wsi, omics = _bag()
    logits = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        model = create_model(name).train()  # dropout on: its masks must follow the seed too
        logits.append(model(wsi=wsi, omics=omics).logits.detach())
    torch.testing.assert_close(logits[0], logits[1], atol=0, rtol=0)
    assert not torch.allclose(logits[0], logits[2])


def test_models_import_nothing_from_bench():
    """The model package stands alone: bench/ builds on models/, never the reverse."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted((Path(__file__).resolve().parents[2] / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "bench" or n.startswith("bench.")]
    assert offenders == []


def test_a_model_error_prints_as_one_paragraph_with_exit_2(capsys):
    from bench.errors import EXIT_USER_ERROR, cli_main

    def main(argv):
        create_model("no-such-model")

    assert cli_main(main)([]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'no-such-model'") and "Traceback" not in err


def test_reads_slides_names_the_slide_free_models():
    """G-HANet reads slides although it infers without genes; the tabular models never do."""
    assert {m for m in list_models() if not reads_slides(m)} == {"snn", "coxnet", "clinical", "clinical_coxnet",
                                                                 "clinical_site"}
