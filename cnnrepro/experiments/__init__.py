"""What to run: named suites of models (classic, degradation; identity and keras only when named)
under named profiles (smoke, quick, paper, d2l, keras), planned into RunConfigs and checked
(``planning``), and the reference results shipped for them (``references``)."""

from cnnrepro.experiments.planning import NAMED_SUITES, SELECTED, PlanError, Request, plan_suite
from cnnrepro.experiments.profiles import PROFILES, Profile
from cnnrepro.experiments.references import REFERENCES, shipped_reference
from cnnrepro.experiments.shards import Shard
from cnnrepro.experiments.suites import OPT_IN_SUITES, SUITES, plan_runs, too_small_inputs

__all__ = [
    "NAMED_SUITES",
    "OPT_IN_SUITES",
    "PROFILES",
    "REFERENCES",
    "SELECTED",
    "SUITES",
    "PlanError",
    "Profile",
    "Request",
    "Shard",
    "plan_runs",
    "plan_suite",
    "shipped_reference",
    "too_small_inputs",
]
