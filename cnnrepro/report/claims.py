"""The claims checker: every claim of docs/references.md as a row (claim, source, expected,
measured, verdict, why).

Claims about the architectures come from the models package (:mod:`cnnrepro.models.facts`, measured
on the built layers of the code that runs now); claims about training are measured here, from the
runs in the results store, against the published results written here once with their sources.
"""

import pandas as pd

from cnnrepro.models import facts
from cnnrepro.models.facts import NOT_MEASURED, Claim, verdict

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


def _finished_runs(runs: pd.DataFrame, model: str, dataset: str, profile: str) -> pd.DataFrame:
    match = runs[(runs["model"] == model) & (runs["dataset"] == dataset) & (runs["profile"] == profile)]
    return match[match["status"] == "finished"]


def _ran_instead(runs: pd.DataFrame) -> str:
    pairs = sorted({f"{p} on {d}" for p, d in zip(runs["profile"], runs["dataset"], strict=True)})
    return ", ".join(pairs) or "nothing"


def published_result_claims(runs: pd.DataFrame) -> list[Claim]:
    """Published accuracies, compared only with runs whose dataset and recipe (profile) match."""
    claims = []
    for depth, error in HE_TEST_ERROR.items():
        found = _finished_runs(runs, f"resnet{depth}", "cifar10", "paper")
        claim = f"ResNet-{depth} reaches {error}% CIFAR-10 test error"
        expected = f"{error}% ± {HE_TOLERANCE_PP} pp"
        if found.empty:
            why = (
                f"needs resnet{depth} under the paper profile on cifar10; this store ran {_ran_instead(runs)}"
            )
            claims.append(Claim(claim, f"{HE_2015}, Table 6", expected, "", NOT_MEASURED, why))
            continue
        measured = 100 * (1 - found["test_acc"].mean())
        claims.append(
            Claim(
                claim,
                f"{HE_2015}, Table 6",
                expected,
                f"{measured:.2f}% ({len(found)} seeds)",
                verdict(abs(measured - error) <= HE_TOLERANCE_PP),
            )
        )
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


def check_claims(runs: pd.DataFrame, degradation: pd.DataFrame) -> pd.DataFrame:
    """Every claim, as a DataFrame in the order the report shows them."""
    claims = facts.architecture_claims() + [degradation_claim(degradation)] + published_result_claims(runs)
    return pd.DataFrame([vars(c) for c in claims])
