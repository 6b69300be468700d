"""Named suites of runs (classic, degradation) under named profiles (smoke, quick, paper, d2l)."""

from cnnrepro.experiments.profiles import PROFILES, Profile
from cnnrepro.experiments.suites import SUITES, plan_runs

__all__ = ["PROFILES", "SUITES", "Profile", "plan_runs"]
