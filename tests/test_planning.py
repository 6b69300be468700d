"""Planning (cnnrepro.experiments.planning): which runs a request plans under each profile, and
the checks a plan must pass before anything is written. Nothing trains here."""

import pytest

from cnnrepro.data import dataset_resolution
from cnnrepro.experiments import (
    PROFILES,
    SELECTED,
    SUITES,
    PlanError,
    Request,
    Shard,
    plan_runs,
    plan_suite,
    too_small_inputs,
)
from cnnrepro.experiments.planning import check_input_sizes, decode_size, selected_models

QUICK = PROFILES["quick"]


def planned(request: Request, profile=QUICK) -> dict:
    """{suite: {(model, seed), ...}} of the runs the request plans."""
    plan = {}
    for suite, config in plan_suite(request, profile, profile.dataset):
        plan.setdefault(suite, set()).add((config.model, config.seed))
    return plan


def test_the_quick_profile_plans_three_degradation_seeds_and_leaves_out_depth_110():
    plan = planned(Request(all_suites=True))
    assert plan["classic"] == {(m, 0) for m in SUITES["classic"]}
    kept = [m for m in SUITES["degradation"] if m not in ("plain110", "resnet110")]
    assert plan["degradation"] == {(m, seed) for m in kept for seed in (0, 1, 2)}
    # seeds name every suite's seeds; a model named exactly runs though left out; smoke leaves none out
    assert planned(Request(all_suites=True, seeds=(5,)))["degradation"] == {(m, 5) for m in kept}
    assert planned(Request(models=("plain110",)))["degradation"] == {("plain110", s) for s in (0, 1, 2)}
    plain = {f"plain{depth}" for depth in (20, 32, 44, 56)}  # a pattern keeps the left-out one out
    assert planned(Request(models=("plain*",)))["degradation"] == {(m, s) for m in plain for s in (0, 1, 2)}
    smoke = planned(Request(all_suites=True), PROFILES["smoke"])
    assert {m for m, _ in smoke["degradation"]} == set(SUITES["degradation"])


def test_a_model_in_no_suite_asked_for_runs_as_selected_and_an_unknown_pattern_is_refused():
    pairs = selected_models(Request(suites=("classic",), models=("lenet5", "resnet20")), QUICK)
    assert pairs == [("classic", "lenet5"), (SELECTED, "resnet20")]
    with pytest.raises(PlanError, match="--models resnet7 matches no model"):
        selected_models(Request(models=("lenet5", "resnet7")), QUICK)


@pytest.mark.parametrize("profile", PROFILES.values(), ids=list(PROFILES))
def test_every_profile_feeds_every_model_an_input_its_layers_accept(profile):
    """The left-out models too: --models still runs them."""
    every_model = [model for suite in SUITES.values() for model in suite]
    plan = plan_runs(every_model, profile, [0])
    assert too_small_inputs(plan, dataset_resolution(profile.dataset)) == []


def test_a_plan_with_too_small_an_input_is_refused_naming_each_model():
    paper = PROFILES["paper"]
    plan = plan_suite(Request(suites=("classic",)), paper, "mnist5k")
    with pytest.raises(PlanError) as refused:
        check_input_sizes(plan, paper, "mnist5k")
    assert "plans vgg11 at 28x28 (its layers need 32x32 or more)" in str(refused.value)
    assert "alexnet" not in str(refused.value)  # its recipe gives it its own input size
    check_input_sizes(plan_suite(Request(suites=("classic",)), QUICK, "mnist5k"), QUICK, "mnist5k")


def test_speed_settings_name_every_planned_run_and_change_its_key():
    smoke = PROFILES["smoke"]

    def speeds(**settings) -> tuple[set, set]:
        plan = plan_suite(Request(models=("lenet5",), **settings), smoke, smoke.dataset)
        return {(c.channels_last, c.compile, c.amp) for _, c in plan}, {c.key() for _, c in plan}

    default, default_keys = speeds()
    fast, fast_keys = speeds(channels_last=True, compile="default", amp="bf16")
    tuned, tuned_keys = speeds(channels_last=False, compile="max-autotune", amp="off")
    assert (default, fast, tuned) == (
        {(False, "", "")},
        {(True, "default", "bf16")},
        {(False, "max-autotune", "")},
    )
    assert len(default_keys | fast_keys | tuned_keys) == 3


def test_each_run_is_planned_once_and_shards_cover_the_plan_exactly_once():
    both = plan_suite(Request(suites=("degradation", "identity")), QUICK, QUICK.dataset)
    keys = [config.key() for _, config in both]
    assert len(keys) == len(set(keys))
    assert {suite for suite, config in both if config.model == "resnet20"} == {"degradation"}
    shards = [plan_suite(Request(all_suites=True, shard=Shard(i, 3)), QUICK, QUICK.dataset) for i in range(3)]
    sharded = [config.key() for shard in shards for _, config in shard]
    every = [config.key() for _, config in plan_suite(Request(all_suites=True), QUICK, QUICK.dataset)]
    assert sorted(sharded) == sorted(every) and all(shards)


def test_an_image_folder_is_decoded_at_the_largest_planned_input():
    keras = PROFILES["keras"]
    plan = plan_suite(Request(suites=("keras",)), keras, keras.dataset)
    assert decode_size(plan) == 224
    assert decode_size(plan_suite(Request(models=("resnet20",)), QUICK, QUICK.dataset)) is None
