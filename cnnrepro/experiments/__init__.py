"""Named suites of runs (classic, degradation) under named profiles (smoke, quick, paper, d2l)."""

from cnnrepro.experiments.profiles import PROFILES, Profile
from cnnrepro.experiments.shards import Shard
from cnnrepro.experiments.suites import SUITES, plan_runs, too_small_inputs

__all__ = ["PROFILES", "SUITES", "Profile", "Shard", "plan_runs", "too_small_inputs"]
