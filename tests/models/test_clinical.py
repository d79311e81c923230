"""Clinical Cox and Clinical+CoxNet: an encoding fitted on the training side only, sksurv's fits, unpenalised covariates."""

import numpy as np
import pandas as pd
import pytest
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis

from bench import checkpoint
from bench.data.cohort import Cohort
from bench.fold import OmicScaler, make_fold
from bench.train import TrainSettings, fit, predict
from models import SurvivalEstimator, create_model, get_model_class
from models.clinical import encode, fit_encoding, unseen_values

SIZES = (3, 4, 2, 3, 5, 3)
COLUMNS = ("age", "is_female", "oncotree_code")


def _frame(n=120, seed=0, subtypes=("IDC", "ILC", "MDLC")):
    rng = np.random.default_rng(seed)
    share = np.array([0.6, 0.3, 0.1][: len(subtypes)])
    return pd.DataFrame({
        "age": rng.integers(30, 90, n).astype(float),
        "is_female": rng.integers(0, 2, n),
        "oncotree_code": rng.choice(subtypes, n, p=share / share.sum()),
        "site": rng.choice(["A2", "B6", "E9"], n),
    }, index=[f"P{i:03d}" for i in range(n)])


def _survival(frame, seed=0):
    rng = np.random.default_rng(seed)
    lp = 0.04 * (frame["age"] - 60) + 0.8 * (frame["oncotree_code"] == "ILC")
    time = rng.exponential(30 * np.exp(-lp.to_numpy()))
    cens = rng.exponential(45, len(frame))
    return np.minimum(time, cens) + 0.01, (time <= cens).astype(int)


def test_registered_as_estimators_reading_the_clinical_columns():
    for name in ("clinical", "clinical_site", "clinical_coxnet"):
        cls = get_model_class(name)
        assert cls.estimator and issubclass(cls, SurvivalEstimator) and "wsi" not in cls.infer_modalities
        assert {"age", "is_female", "oncotree_code"} <= set(cls.clinical_columns)
    assert "site" not in get_model_class("clinical").clinical_columns  # a centre effect: left out by default
    assert "site" in get_model_class("clinical_site").clinical_columns
    assert get_model_class("clinical_coxnet").infer_modalities == {"omics", "clinical"}


def test_encoding_reference_level_median_and_scaling_come_from_the_training_rows():
    train = _frame()
    train.loc["P000", "age"] = np.nan
    enc = fit_encoding(train, COLUMNS)
    assert enc["levels"]["oncotree_code"][0] == "IDC"  # the most frequent level is the reference, dropped
    assert enc["design"] == ["age", "is_female", "oncotree_code=ILC", "oncotree_code=MDLC"]
    assert enc["fill"]["age"] == train["age"].median()
    x = encode(train, enc)
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-12)
    # a test patient with a subtype training never saw, and one without age
    test = pd.DataFrame({"age": [np.nan, 50.0], "is_female": [1, 0], "oncotree_code": ["MBC", "IDC"]},
                        index=["T1", "T2"])
    xt = encode(test, enc)
    ref = encode(pd.DataFrame({"age": [train["age"].median()], "is_female": [1], "oncotree_code": ["IDC"]}), enc)
    np.testing.assert_array_equal(xt[0], ref[0])  # unseen subtype = reference level; missing age = training median
    assert unseen_values(test, enc) == {"age_missing": 1, "is_female_missing": 0, "oncotree_code_missing": 0,
                                        "oncotree_code_unseen": 1}
    assert fit_encoding(train, COLUMNS) == enc  # the test rows changed nothing


def test_constant_and_single_level_columns_are_dropped():
    """UCEC is all female; BLCA and LUAD hold one subtype: such columns carry nothing and are not in the design."""
    frame = _frame(subtypes=("BLCA",)).assign(is_female=1)
    enc = fit_encoding(frame, COLUMNS)
    assert enc["design"] == ["age"] and encode(frame, enc).shape == (len(frame), 1)
    time, event = _survival(frame)
    model = create_model("clinical", omic_sizes=SIZES, clinical_encoding=enc, alpha=1.0).fit([], time, event, frame)
    assert model.coef.shape == (1,)


def test_clinical_cox_is_sksurvs_ridge_cox_with_breslow_survival():
    frame = _frame()
    time, event = _survival(frame)
    enc = fit_encoding(frame, COLUMNS)
    model = create_model("clinical", omic_sizes=SIZES, clinical_encoding=enc, alpha=2.0).fit([], time, event, frame)
    x = encode(frame, enc)
    y = np.array(list(zip(event.astype(bool), time)), dtype=[("e", bool), ("t", float)])
    ref = CoxPHSurvivalAnalysis(alpha=2.0, ties="breslow").fit(x, y)
    times = np.quantile(time[event == 1], [0.2, 0.5, 0.8]) + 1e-9  # between deaths: P(T >= t) = P(T > t)
    risk, surv = model.predict([], times, frame)
    np.testing.assert_allclose(risk, ref.predict(x), rtol=1e-10)
    want = np.stack([fn(times) for fn in ref.predict_survival_function(x)])
    np.testing.assert_allclose(surv, want, rtol=1e-8)
    assert model.coef[enc["design"].index("age")] > 0  # age raises the simulated hazard


def test_a_saved_fit_reloads_only_into_the_same_design():
    frame = _frame()
    time, event = _survival(frame)
    enc = fit_encoding(frame, COLUMNS)
    model = create_model("clinical", omic_sizes=SIZES, clinical_encoding=enc).fit([], time, event, frame)
    again = create_model("clinical", omic_sizes=SIZES, clinical_encoding=enc).load_state_dict(model.state_dict())
    for a, b in zip(model.predict([], [1.0, 5.0], frame), again.predict([], [1.0, 5.0], frame)):
        np.testing.assert_array_equal(a, b)
    narrower = fit_encoding(frame.assign(oncotree_code="IDC"), COLUMNS)  # one subtype: its column dropped
    with pytest.raises(RuntimeError, match="clinical state has .* coefficients for .* design columns"):
        create_model("clinical", omic_sizes=SIZES, clinical_encoding=narrower).load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match="clinical state needs coef, base_time, base_log_cumhaz"):
        again.load_state_dict({"coef": model.state_dict()["coef"]})


def _coxnet_data(n=150, seed=0):
    frame = _frame(n, seed)
    rng = np.random.default_rng(seed + 1)
    omics = [rng.standard_normal((n, s)) for s in SIZES]
    time, event = _survival(frame, seed)
    return frame, omics, time, event


def test_clinical_coxnet_leaves_the_clinical_coefficients_unpenalised():
    """At alpha_ratio 1 every gene is zero and the clinical part is the unpenalised Cox fit of the covariates alone;
    plain CoxNet on the same design with every column penalised zeroes all of them there."""
    frame, omics, time, event = _coxnet_data()
    enc = fit_encoding(frame, COLUMNS)
    n_clin = len(enc["design"])
    null = create_model("clinical_coxnet", omic_sizes=SIZES, clinical_encoding=enc, alpha_ratio=1.0, l1_ratio=0.5)
    null.fit(omics, time, event, clinical=frame)
    assert np.all(null.coef[n_clin:] == 0)
    y = np.array(list(zip(event.astype(bool), time)), dtype=[("e", bool), ("t", float)])
    plain = CoxPHSurvivalAnalysis(alpha=0.0, ties="breslow").fit(encode(frame, enc), y)
    np.testing.assert_allclose(null.coef[:n_clin], plain.coef_, rtol=1e-3, atol=1e-4)
    assert np.all(np.abs(null.coef[:n_clin]) > 1e-3)

    model = create_model("clinical_coxnet", omic_sizes=SIZES, clinical_encoding=enc, alpha_ratio=0.2, l1_ratio=0.5)
    model.fit(omics, time, event, clinical=frame)
    x = np.concatenate([encode(frame, enc), *omics], axis=1)
    factor = np.r_[np.zeros(n_clin), np.ones(sum(SIZES))]
    ref = CoxnetSurvivalAnalysis(alpha_min_ratio=0.2, l1_ratio=0.5, penalty_factor=factor, max_iter=100_000).fit(x, y)
    np.testing.assert_allclose(model.coef, ref.coef_[:, -1], rtol=1e-10, atol=1e-12)
    everything = CoxnetSurvivalAnalysis(alpha_min_ratio=0.2, l1_ratio=0.5, max_iter=100_000).fit(x, y)
    assert np.all(everything.coef_[:n_clin, 0] == 0)  # at its alpha_max the fully penalised fit keeps nothing


def _cohort(frame, omics, time, event) -> Cohort:
    cols = [f"G{g}_{i}_rnaseq" for g, s in enumerate(SIZES) for i in range(s)]
    groups = tuple(tuple(c for c in cols if c.startswith(f"G{g}_")) for g in range(len(SIZES)))
    patients = pd.DataFrame({"time": time, "event": event, "slides": [(f"{c}.svs",) for c in frame.index]},
                            index=frame.index)
    genes = pd.DataFrame(np.concatenate(omics, axis=1).astype(np.float32), index=frame.index, columns=cols)
    return Cohort("toy", patients, genes, groups, table_path=None, clinical=frame)


@pytest.mark.parametrize("name", ["clinical", "clinical_coxnet"])
def test_trained_through_the_trainer_the_held_out_side_never_informs_the_encoding(name, tmp_path):
    """A subtype present only on the held-out side is absent from the saved encoding and scored as the reference."""
    frame, omics, time, event = _coxnet_data()
    frame.loc[frame.index[-5:], "oncotree_code"] = "MBC"
    cohort = _cohort(frame, omics, time, event)
    ids = list(frame.index)
    train, test = make_fold(cohort, ids[:-10], ids[-10:], np.array([0, 10, 20, 40, 1e4]), None)
    params = {"alpha": 1.0} if name == "clinical" else {"alpha_ratio": 0.3, "l1_ratio": 0.5}
    result = fit(name, train, params, TrainSettings(epochs=1))
    enc = result.model_kwargs["clinical_encoding"]
    assert "MBC" not in enc["levels"]["oncotree_code"]
    assert enc == fit_encoding(frame.loc[ids[:-10]], COLUMNS)
    assert unseen_values(test.clinical, enc)["oncotree_code_unseen"] == 5
    pred = predict(result.model, test, TrainSettings())
    assert pred["case_id"].tolist() == ids[-10:] and np.isfinite(pred["risk"]).all()
    # the saved model (bench.checkpoint) carries the encoding in its kwargs and scores the same
    files = checkpoint.pack(name, result.model, result.model_kwargs, train.edges, OmicScaler(train.omics),
                            cohort.groups, params, {}, None, "test")
    for file, data in files.items():
        (tmp_path / file).write_bytes(data)
    again = checkpoint.load(tmp_path).model
    pd.testing.assert_frame_equal(predict(again, test, TrainSettings()), pred)
