"""The reference results shipped with the code: one store per profile and dataset in
``reports/reference/<profile>-<dataset>/``, written by ``make reference``; the runner judges a
command's runs against the one of its profile and dataset (``cnnrepro.report.verdicts``)."""

from pathlib import Path

from cnnrepro.data import dataset_label
from cnnrepro.store import RUNS_CSV

REFERENCES = Path(__file__).resolve().parents[2] / "reports" / "reference"


def shipped_reference(profile_name: str, dataset_name: str) -> Path | None:
    """The shipped store of this profile on this dataset, or None where none is shipped."""
    shipped = REFERENCES / f"{profile_name}-{dataset_label(dataset_name)}"
    return shipped if (shipped / RUNS_CSV).exists() else None
