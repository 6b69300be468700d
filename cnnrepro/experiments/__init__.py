"""Named suites of runs (classic, degradation; identity only when named) under named profiles
(smoke, quick, paper, d2l)."""

from cnnrepro.experiments.profiles import PROFILES, Profile
from cnnrepro.experiments.shards import Shard
from cnnrepro.experiments.suites import OPT_IN_SUITES, SUITES, plan_runs, too_small_inputs

__all__ = ["OPT_IN_SUITES", "PROFILES", "SUITES", "Profile", "Shard", "plan_runs", "too_small_inputs"]
