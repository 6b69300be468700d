"""Looking inside a stored run: its final weights (checked against runs.csv's hash), the feature
maps one image makes at chosen layers, the first convolution's filters, and its predictions.
``python -m cnnrepro.inspect OUT --model M`` writes them as PNGs; the report's "Inside the
networks" section shows a few of them for every classic model."""

from cnnrepro.inspect.layers import FAMILY_RULES, LayerRule, capture, default_layers, select_layers
from cnnrepro.inspect.stored import InspectError, StoredRun, find_run, load_run

__all__ = [
    "FAMILY_RULES",
    "InspectError",
    "LayerRule",
    "StoredRun",
    "capture",
    "default_layers",
    "find_run",
    "load_run",
    "select_layers",
]
