"""Planning: the runs a command asks for, as (suite, RunConfig) pairs, and the checks a plan must
pass before anything is written or downloaded.

A :class:`Request` says what was asked (suites, model patterns, seeds, epochs, backend, speed
settings, processes, shard); a profile fills in the rest. The runner's command line
(``cnnrepro.run``) turns its arguments into a Request and calls :func:`plan_suite`.
"""

import dataclasses
import fnmatch
from dataclasses import dataclass

from cnnrepro import models
from cnnrepro.data import dataset_resolution
from cnnrepro.experiments.profiles import Profile
from cnnrepro.experiments.shards import Shard
from cnnrepro.experiments.suites import OPT_IN_SUITES, SUITES, plan_runs, too_small_inputs
from cnnrepro.train import Replicas, RunConfig, train_examples

NAMED_SUITES = SUITES | OPT_IN_SUITES  # the suites a request may name; all_suites means SUITES alone
SELECTED = "selected"  # the suite of a model asked for by pattern that no requested suite holds


class PlanError(Exception):
    """A plan that cannot run as asked (a pattern matching no model, an input too small for its
    model, batches that do not split over the processes): one line, said before anything starts."""


@dataclass(frozen=True)
class Request:
    """What a command asks to run. Empty or None: the profile's (its seeds, epochs, speed)."""

    all_suites: bool = False  # every suite of SUITES (--all)
    suites: tuple[str, ...] = ()  # named suites, SUITES or OPT_IN_SUITES (--suite)
    models: tuple[str, ...] = ()  # fnmatch patterns (--models): only the models they match
    seeds: tuple[int, ...] = ()
    epochs: int | None = None
    backend: str = "custom"
    channels_last: bool | None = None
    compile: str | None = None  # a COMPILE_MODES name, or "off"
    amp: str | None = None  # an AMP_DTYPES name, or "off"
    sync_bn: bool = False  # under torchrun: BatchNorm statistics pooled over the processes
    shard: Shard | None = None


def selected_models(request: Request, profile: Profile) -> list[tuple[str, str]]:
    """(suite, model) pairs to run, in suite order: the suites' models but those the profile leaves
    out, unless the request's patterns name them exactly (a pattern such as 'plain*' keeps them
    out). A model matched by a pattern but in no requested suite runs as suite SELECTED."""
    every = request.all_suites or (request.models and not request.suites)
    suites = sorted(SUITES) if every else request.suites
    pairs = [(suite, model) for suite in suites for model in NAMED_SUITES[suite]]
    if not request.models:
        return [(suite, model) for suite, model in pairs if model not in profile.left_out]
    known = models.list_models()
    unknown = [pattern for pattern in request.models if not fnmatch.filter(known, pattern)]
    if unknown:
        raise PlanError(f"--models {' '.join(unknown)} matches no model; see --list")

    def chosen(model: str) -> bool:
        matched = any(fnmatch.fnmatch(model, pattern) for pattern in request.models)
        return matched and (model not in profile.left_out or model in request.models)

    in_suites = [(suite, model) for suite, model in pairs if chosen(model)]
    held = {model for _, model in pairs}
    outside = [model for model in known if chosen(model) and model not in held]
    return in_suites + [(SELECTED, model) for model in outside]


def suite_seeds(request: Request, profile: Profile, suite: str) -> tuple[int, ...]:
    """The seeds a suite trains: the request's, else the profile's for that suite."""
    return tuple(request.seeds) if request.seeds else profile.seeds(suite)


def speed_settings(request: Request, profile: Profile) -> dict:
    """channels_last, compile and amp as every planned run takes them: the request's, else the
    profile's (RunConfig's fields of the same names; "off" is the default, "")."""
    given = {"channels_last": request.channels_last, "compile": request.compile, "amp": request.amp}
    chosen = {name: getattr(profile, name) if value is None else value for name, value in given.items()}
    return {name: "" if value == "off" else value for name, value in chosen.items()}


def plan_suite(
    request: Request, profile: Profile, dataset_name: str, world_size: int = 1
) -> list[tuple[str, RunConfig]]:
    """(suite, config) of every planned run: each config once, in the request's shard if it names
    one, for torchrun's world size, as fast as the request asks."""
    parallel = {"world_size": world_size, "sync_bn": request.sync_bn} if world_size > 1 else {}
    parallel |= speed_settings(request, profile)
    plan = [
        (suite, dataclasses.replace(config, **parallel))
        for suite, model in selected_models(request, profile)
        for config in plan_runs(
            [model],
            profile,
            suite_seeds(request, profile, suite),
            dataset_name,
            request.backend,
            request.epochs,
        )
    ]
    return [
        (suite, config)
        for suite, config in first_of_each_key(plan)
        if request.shard is None or request.shard.holds(config.key())
    ]


def first_of_each_key(plan: list[tuple[str, RunConfig]]) -> list[tuple[str, RunConfig]]:
    """The plan with each config once, under the first suite that plans it: two suites can hold one
    run (under quick, the degradation and identity suites both train resnet20)."""
    firsts = {}
    for suite, config in plan:
        firsts.setdefault(config.key(), (suite, config))
    return list(firsts.values())


def decode_size(plan) -> int | None:
    """The side an image folder is decoded at: the largest planned input size (None: the default)."""
    return max((config.input_size for _, config in plan if config.input_size), default=None)


def check_input_sizes(plan, profile: Profile, dataset_name: str) -> None:
    """PlanError if a planned model's input is too small for its layers (before any download)."""
    resolution = dataset_resolution(dataset_name, decode_size(plan))
    small = too_small_inputs([config for _, config in plan], resolution)
    if small:
        raise PlanError(
            f"the {profile.name} profile on {dataset_name} plans {'; '.join(small)}: each would fail at "
            "its first batch. Leave them out (--models names the others), or give them an input size "
            "in the profile's recipes"
        )


def check_batches_split(plan, dataset, world_size: int) -> None:
    """PlanError unless every planned run's batches split over torchrun's processes."""
    for _, config in plan:
        try:
            Replicas(0, world_size).check_batches(train_examples(config, dataset), config.batch_size)
        except ValueError as error:
            raise PlanError(f"{config.model} under torchrun: {error}") from None
