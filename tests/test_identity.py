"""He et al. 2016's identity-mapping experiments: the identity suite's plans under the quick and
paper profiles, and the report's table, figure and claims, from a synthetic store."""

import pandas as pd
import pytest
from test_report import record

from cnnrepro.experiments import OPT_IN_SUITES, PROFILES, SUITES, Request, plan_runs, plan_suite
from cnnrepro.models.facts import FAILS, HOLDS, NOT_MEASURED
from cnnrepro.models.resnet import UNITS, unit_model
from cnnrepro.report import claims, figures, tables, write_report
from cnnrepro.store import ResultsStore

# A final training loss per unit, ordered as the paper's Table 2 finds: full pre-activation lowest,
# BN after addition highest.
PAPER_ORDER = {
    "original": 0.30,
    "bn_after_add": 0.50,
    "relu_before_add": 0.40,
    "relu_preact": 0.32,
    "full_preact": 0.20,
}
SEED_SHIFT = 0.02  # seed 1's loss over seed 0's: the spread


def planned(profile: str) -> list:
    profile = PROFILES[profile]
    models = [m for m in OPT_IN_SUITES["identity"] if m not in profile.left_out]
    return plan_runs(models, profile, list(profile.seeds("identity")))


def test_identity_is_opt_in_and_each_profile_trains_its_depths():
    assert "identity" not in SUITES, "--all (make run) must not plan it: it does not fit 15 minutes"
    quick = planned("quick")
    assert {(c.model, c.seed) for c in quick} == {(unit_model(20, u), s) for u in UNITS for s in (0, 1, 2)}
    assert {c.warmup_steps for c in quick} == {0}, "the same recipe as the degradation suite's resnet20"
    paper = [c for c in planned("paper") if c.model != "resnet20"]  # resnet20: the degradation suite's
    table2 = {unit_model(110, unit) for unit in UNITS}
    assert {c.model for c in paper} == table2 | {"resnet164", "preresnet164"}
    assert {(c.lr, c.warmup_steps, c.dataset, c.epochs) for c in paper} == {(0.1, 400, "cifar10", 164)}
    assert {c.seed for c in paper} == {0, 1, 2, 3, 4}, "the paper's medians of five runs"


def synthetic_store(order: dict, depth: int = 20, epochs: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and per-epoch rows: every unit at ``depth`` (the original labeled as the degradation
    suite's, as a store shared with make run has it), two seeds, losses falling to ``order``'s;
    and nets the identity suite does not hold (resnet32 without preresnet32, resnet18-d2l)."""
    models = [unit_model(depth, unit) for unit in UNITS] + ["resnet32", "resnet18-d2l"]
    runs, rows = [], []
    for model in models:
        suite = "degradation" if model == unit_model(depth, "original") else "identity"
        final_loss = order.get(tables.units_of(pd.Series([model]))["unit"].iloc[0], 1.0)
        for seed in (0, 1):
            key = f"{model}-{seed}"
            runs.append(dict(suite=suite, model=model, key=key, seed=seed, status="finished"))
            for epoch in range(1, epochs + 1):
                loss = final_loss * (epochs / epoch) + SEED_SHIFT * seed
                rows.append(
                    dict(
                        key=key,
                        model=model,
                        epoch=epoch,
                        train_loss=loss,
                        train_acc=1 - loss / 2,
                        test_acc=0.9,
                    )
                )
    return pd.DataFrame(runs), pd.DataFrame(rows)


def test_identity_table_has_every_unit_in_table_2_order_with_mean_and_spread():
    curves = tables.identity_curves(*synthetic_store(PAPER_ORDER))
    table = tables.identity_table(curves)
    assert list(table["unit"]) == list(UNITS) and set(table["depth"]) == {20}
    assert table["train_loss"].tolist() == pytest.approx([PAPER_ORDER[u] + SEED_SHIFT / 2 for u in UNITS])
    assert table["train_loss_spread"].tolist() == pytest.approx([SEED_SHIFT] * len(UNITS))
    assert table["train_error_spread"].tolist() == pytest.approx([SEED_SHIFT / 2] * len(UNITS))
    assert table["test_error"].tolist() == pytest.approx([0.1] * len(UNITS))


def test_identity_figure_draws_original_against_full_preactivation():
    curves = tables.identity_curves(*synthetic_store(PAPER_ORDER))
    fig = figures.identity(curves, "caption")
    (loss_ax, error_ax) = fig.axes
    labels = [line.get_label() for line in loss_ax.get_lines() + error_ax.get_lines()]
    assert labels == [
        "original, training loss",
        "full_preact, training loss",
        "original, test error",
        "full_preact, test error",
    ]
    assert figures.png_bytes(fig).startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("swap", "expected"),
    [(None, HOLDS), (("full_preact", "original"), FAILS), (("bn_after_add", "relu_before_add"), FAILS)],
)
def test_ordering_claim_is_measured_whatever_it_finds(swap, expected):
    order = dict(PAPER_ORDER)
    if swap:
        a, b = swap
        order[a], order[b] = order[b], order[a]
    table = tables.identity_table(tables.identity_curves(*synthetic_store(order)))
    claim = claims.identity_ordering_claim(table)
    assert claim.verdict == expected
    assert f"full_preact {order['full_preact'] + SEED_SHIFT / 2:.4f}" in claim.measured
    empty = claims.identity_ordering_claim(tables.identity_table(pd.DataFrame()))
    assert empty.verdict == NOT_MEASURED and "--suite identity" in empty.why


def test_table_2_and_3_numbers_are_compared_only_with_paper_runs():
    runs = pd.DataFrame(
        [
            dict(model="preresnet110", dataset="cifar10", profile="paper", status="finished", test_acc=acc)
            for acc in (0.9350, 0.9370, 0.9365, 0.9000, 0.9360)  # median 6.40%, mean 7.11% (outside)
        ]
        + [dict(model="resnet110", dataset="mnist5k", profile="quick", status="finished", test_acc=0.99)]
    )
    found = {c.claim: c for c in claims.identity_result_claims(runs)}
    preact = found["ResNet-110 with full preact units reaches 6.37% CIFAR-10 test error"]
    assert preact.verdict == HOLDS and preact.measured == "6.40% (median of 5 seeds)"
    original = found["ResNet-110 with original units reaches 6.61% CIFAR-10 test error"]
    assert original.verdict == NOT_MEASURED and "quick on mnist5k" in original.why
    at_164 = found["ResNet-164 with bn after add units reaches 6.5% CIFAR-10 test error"]
    assert at_164.verdict == NOT_MEASURED and "not registered" in at_164.why
    assert len(found) == 12, "Table 2's ten and Table 3's ResNet-1001 pair"


def runner_plan(**request) -> list:
    return plan_suite(Request(**request), PROFILES["quick"], "mnist5k")


def test_the_runner_plans_the_identity_suite_only_when_named_and_each_run_once():
    assert {(s, c.model) for s, c in runner_plan(suites=("identity",)) if c.seed == 0} == {
        ("identity", unit_model(20, unit)) for unit in UNITS
    }
    assert len(runner_plan(suites=("identity",))) == 15
    everything = {c.model for _, c in runner_plan(all_suites=True)}
    assert not everything & set(OPT_IN_SUITES["identity"]) - {"resnet20"}
    both = runner_plan(suites=("degradation", "identity"))
    keys = [c.key() for _, c in both]
    assert len(keys) == len(set(keys)), "resnet20 trains once, under the first suite that plans it"
    assert {s for s, c in both if c.model == "resnet20"} == {"degradation"}


def test_the_report_shows_the_identity_section_when_the_store_has_the_suite(tmp_path):
    store = ResultsStore(tmp_path / "run")
    record(store, "classic", "lenet5", 0, 0.98, 0.90)
    assert "Identity mappings: residual units" not in write_report(store.directory).read_text()
    for unit, loss in PAPER_ORDER.items():
        model = unit_model(20, unit)
        for seed in (0, 1):
            record(store, "degradation" if unit == "original" else "identity", model, seed, 1 - loss, 0.9)
    page = write_report(store.directory).read_text()
    assert "Identity mappings: residual units" in page and 'id="identity-table"' in page
    assert (store.directory / "identity.png").exists()
