"""The claims checker: every claim of docs/references.md as a row (claim, source, expected,
measured, verdict, why).

Claims about the architectures come from the models package (:mod:`cnnrepro.models.facts`, measured
on the built layers of the code that runs now); claims about training are measured here, from the
runs in the results store, against the published results written here once with their sources.
"""

import pandas as pd

from cnnrepro.models import facts, list_models
from cnnrepro.models.facts import NOT_MEASURED, Claim, verdict
from cnnrepro.models.resnet import UNITS, unit_model

HE_2015 = "He, Zhang, Ren, Sun. Deep residual learning for image recognition. 2015"
D2L = "Zhang, Lipton, Li, Smola. Dive into Deep Learning, chapter 7"
# He et al. 2015, Table 6: CIFAR-10 test error (%) of the residual nets.
HE_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
HE_TOLERANCE_PP = 1.0  # twice the seed-to-seed spread the paper reports (about ±0.5 pp)
# d2l chapter 7 on Fashion-MNIST: reported test accuracy after 10 epochs.
D2L_TEST_ACC = {  # of the book's own networks (cnnrepro/models/d2l.py), which the d2l profile trains
    "lenet5": 0.78,
    "alexnet-d2l": 0.88,
    "vgg11-d2l": 0.92,
    "nin": 0.79,
    "googlenet-d2l": 0.89,
    "resnet18-d2l": 0.89,
    "densenet-d2l": 0.89,
}
D2L_TOLERANCE = 0.02  # single runs; d2l's own numbers move by about this much between releases
KERAS = "the Keras tutorials of the course notes (docs/references.md)"
# Their results, each (model, dataset, claim, expected accuracy, tolerance): single runs, so the
# tolerance is wide; measured only from runs of the keras profile on the tutorial's dataset.
KERAS_RESULTS = (
    (
        "lenet5",
        "mnist",
        "LeNet (tanh, max-pool) reaches 98.69% MNIST test accuracy in 5 epochs",
        0.9869,
        0.005,
    ),
    ("alexnet", "oxflower17", "AlexNet reaches about 55% 17 Flowers test accuracy in 30 epochs", 0.55, 0.10),
)
# Their size comparisons, (larger, smaller, claim, ratio): "about" as models.facts means it.
KERAS_RATIOS = (
    ("vgg16", "alexnet", "VGG-16 has about 3x AlexNet's parameters", 3),
    ("vgg16", "googlenet", "Inception v1 has about 1/20 of VGG-16's parameters", 20),
)
HE_2016 = "He, Zhang, Ren, Sun. Identity mappings in deep residual networks. ECCV 2016"
# He et al. 2016, CIFAR-10 test error (%), median of 5 runs: Table 2's units at ResNet-110 and
# ResNet-164, Table 3's ResNet-1001.
HE_2016_TEST_ERROR = {
    (110, "original"): 6.61,
    (110, "bn_after_add"): 8.17,
    (110, "relu_before_add"): 7.84,
    (110, "relu_preact"): 6.71,
    (110, "full_preact"): 6.37,
    (164, "original"): 5.93,
    (164, "bn_after_add"): 6.50,
    (164, "relu_before_add"): 6.14,
    (164, "relu_preact"): 5.91,
    (164, "full_preact"): 5.46,
    (1001, "original"): 7.61,
    (1001, "full_preact"): 4.92,
}


# --- claims about training, measured from the runs -----------------------------------------------


def degradation_claim(table: pd.DataFrame) -> Claim:
    """Plain nets degrade with depth, residual ones do not: the deepest plain net's final training
    error exceeds the shallowest's by more than 2 pp, the deepest residual net's does not exceed its
    shallowest's by more than 1 pp. ``table`` is :func:`tables.degradation_table`'s."""
    claim, expected = (
        "plain nets degrade with depth; residual nets do not",
        ("deepest plain > shallowest plain + 2 pp; deepest residual <= shallowest residual + 1 pp"),
    )
    table = table.dropna()
    if len(table) < 2:
        return Claim(
            claim,
            HE_2015,
            expected,
            "",
            NOT_MEASURED,
            "needs the degradation suite at two depths or more, plain and residual",
        )
    shallow, deep = table.iloc[0], table.iloc[-1]
    measured = (
        f"final training error, depth {int(shallow['depth'])} -> {int(deep['depth'])}: "
        f"plain {shallow['plain']:.1%} -> {deep['plain']:.1%}, "
        f"residual {shallow['residual']:.1%} -> {deep['residual']:.1%}"
    )
    ok = deep["plain"] > shallow["plain"] + 0.02 and deep["residual"] <= shallow["residual"] + 0.01
    return Claim(claim, f"{HE_2015}, Figure 6", expected, measured, verdict(ok))


def identity_ordering_claim(table: pd.DataFrame) -> Claim:
    """At the deepest depth with all five of Table 2's units: full pre-activation ends with a final
    training loss at most the original's, and BN after addition with the highest of the five.
    ``table`` is :func:`tables.identity_table`'s."""
    claim = "full pre-activation trains best, BN after addition worst"
    expected = "final training loss: full pre-activation <= original; BN after addition the highest"
    complete = table.groupby("depth")["unit"].nunique() if not table.empty else pd.Series(dtype=int)
    depths = complete[complete == len(UNITS)].index
    if depths.empty:
        why = "needs the identity suite's five units at one depth (python -m cnnrepro.run --suite identity)"
        return Claim(claim, HE_2016, expected, "", NOT_MEASURED, why)
    final = table[table["depth"] == depths.max()].set_index("unit")
    loss = final["train_loss"]
    measured = f"depth {depths.max()}, final training loss: " + ", ".join(
        f"{unit} {loss[unit]:.4f} ({spread_text(final.loc[unit, 'train_loss_spread'])})" for unit in UNITS
    )
    ok = loss["full_preact"] <= loss["original"] and loss.idxmax() == "bn_after_add"
    return Claim(claim, f"{HE_2016}, Table 2 and Figure 6", expected, measured, verdict(ok))


def spread_text(value: float) -> str:
    """A spread over seeds in words: "spread 0.0123", or "one seed" where there is none."""
    return "one seed" if pd.isna(value) else f"spread {value:.4f}"


def _finished_runs(runs: pd.DataFrame, model: str, dataset: str, profile: str) -> pd.DataFrame:
    match = runs[(runs["model"] == model) & (runs["dataset"] == dataset) & (runs["profile"] == profile)]
    return match[match["status"] == "finished"]


def _ran_instead(runs: pd.DataFrame) -> str:
    pairs = sorted({f"{p} on {d}" for p, d in zip(runs["profile"], runs["dataset"], strict=True)})
    return ", ".join(pairs) or "nothing"


def cifar_error_claim(runs: pd.DataFrame, model: str, claim: str, error: float, source: str, median=False):
    """``model``'s CIFAR-10 test error under the paper profile (the mean over seeds, or the median
    where the source gives medians) within HE_TOLERANCE_PP of the published ``error``."""
    found = _finished_runs(runs, model, "cifar10", "paper")
    expected = f"{error}% ± {HE_TOLERANCE_PP} pp"
    if found.empty:
        why = f"needs {model} under the paper profile on cifar10; this store ran {_ran_instead(runs)}"
        return Claim(claim, source, expected, "", NOT_MEASURED, why)
    errors = 100 * (1 - found["test_acc"])
    measured = errors.median() if median else errors.mean()
    statistic = "median" if median else "mean"
    return Claim(
        claim,
        source,
        expected,
        f"{measured:.2f}% ({statistic} of {len(found)} seeds)",
        verdict(abs(measured - error) <= HE_TOLERANCE_PP),
    )


def identity_result_claims(runs: pd.DataFrame) -> list[Claim]:
    """He et al. 2016's Tables 2 and 3, unit by unit and depth by depth (Table 2's units at 164
    layers are not registered: get_model("resnet164", unit=...) builds them, no suite trains them)."""
    claims = []
    for (depth, unit), error in HE_2016_TEST_ERROR.items():
        model = unit_model(depth, unit)
        claim = f"ResNet-{depth} with {unit.replace('_', ' ')} units reaches {error}% CIFAR-10 test error"
        table = "Table 3" if depth == 1001 else "Table 2"
        if model not in list_models():
            why = f"{model} is not registered: the identity suite trains Table 2 at ResNet-110"
            claims.append(Claim(claim, f"{HE_2016}, {table}", f"{error}%", "", NOT_MEASURED, why))
            continue
        claims.append(cifar_error_claim(runs, model, claim, error, f"{HE_2016}, {table}", median=True))
    return claims


def published_result_claims(runs: pd.DataFrame) -> list[Claim]:
    """Published accuracies, compared only with runs whose dataset and recipe (profile) match."""
    claims = [
        cifar_error_claim(
            runs,
            f"resnet{depth}",
            f"ResNet-{depth} reaches {error}% CIFAR-10 test error",
            error,
            f"{HE_2015}, Table 6",
        )
        for depth, error in HE_TEST_ERROR.items()
    ]
    claims += identity_result_claims(runs)
    for model, accuracy in D2L_TEST_ACC.items():
        found = _finished_runs(runs, model, "fashion-mnist", "d2l")
        claim = f"{model} reaches {accuracy:.2f} Fashion-MNIST test accuracy in 10 epochs"
        expected = f">= {accuracy - D2L_TOLERANCE:.2f}"
        if found.empty:
            why = f"needs {model} under the d2l profile on fashion-mnist; this store ran {_ran_instead(runs)}"
            claims.append(Claim(claim, D2L, expected, "", NOT_MEASURED, why))
            continue
        measured = found["test_acc"].mean()
        claims.append(
            Claim(
                claim,
                D2L,
                expected,
                f"{measured:.3f} ({len(found)} seeds)",
                verdict(measured >= accuracy - D2L_TOLERANCE),
            )
        )
    claims += keras_result_claims(runs)
    claims.append(
        Claim(
            "LeNet-5 reaches 0.95% MNIST test error",
            "LeCun et al. 1998",
            "0.95%",
            "",
            NOT_MEASURED,
            "no profile follows the paper's recipe (20 passes of stochastic diagonal Levenberg-Marquardt, "
            "distorted training set); mnist5k runs are not comparable",
        )
    )
    return claims


def keras_result_claims(runs: pd.DataFrame) -> list[Claim]:
    """The Keras tutorials' accuracies and size ratios, from the keras profile's runs on their
    datasets (the ratios from the 17-class networks the runs trained)."""
    claims = []
    for model, dataset, claim, accuracy, tolerance in KERAS_RESULTS:
        found = _finished_runs(runs, model, dataset, "keras")
        expected = f"{accuracy:.2%} ± {tolerance * 100:g} pp"
        if found.empty:
            why = f"needs {model} under the keras profile on {dataset}; this store ran {_ran_instead(runs)}"
            claims.append(Claim(claim, KERAS, expected, "", NOT_MEASURED, why))
            continue
        measured = found["test_acc"].mean()
        ok = abs(measured - accuracy) <= tolerance
        claims.append(Claim(claim, KERAS, expected, f"{measured:.2%} ({len(found)} seeds)", verdict(ok)))
    for larger, smaller, claim, ratio in KERAS_RATIOS:
        found = [_finished_runs(runs, model, "oxflower17", "keras") for model in (larger, smaller)]
        expected = f"about {ratio}x (within {facts.ABOUT:.0%})"
        if any(f.empty for f in found):
            why = f"needs {larger} and {smaller} under the keras profile on oxflower17 (their 17-class nets)"
            claims.append(Claim(claim, KERAS, expected, "", NOT_MEASURED, why))
            continue
        big, small = (int(f["params"].iloc[0]) for f in found)
        measured = f"{big / small:.2f}x ({big:,} / {small:,})"
        claims.append(
            Claim(claim, KERAS, expected, measured, verdict(abs(big / small - ratio) <= facts.ABOUT * ratio))
        )
    return claims


def check_claims(
    runs: pd.DataFrame, degradation: pd.DataFrame, identity: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every claim, as a DataFrame in the order the report shows them. ``identity`` is
    :func:`tables.identity_table`'s (None: the identity suite's ordering is not measured)."""
    identity = pd.DataFrame(columns=["depth", "unit"]) if identity is None else identity
    claims = (
        facts.architecture_claims()
        + [degradation_claim(degradation), identity_ordering_claim(identity)]
        + published_result_claims(runs)
    )
    return pd.DataFrame([vars(c) for c in claims])
