"""Reports: the results store the runner writes, and the CSV + self-contained HTML report made from
it alone (``python -m cnnrepro.report DIR``)."""

from cnnrepro.report.results import NoResultsError, load_results
from cnnrepro.report.writer import write_report

__all__ = ["NoResultsError", "load_results", "write_report"]
