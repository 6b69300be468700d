"""Facts about the architectures (cnnrepro.models.facts): each published figure holds on our built
layers, and each measured side is computed from the layers, not assumed."""

import pandas as pd
import pytest
import torch

from cnnrepro import models
from cnnrepro.models import facts, googlenet

PUBLISHED = [name for name in models.list_models() if models.model_info(name).published_params]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_parameter_counts(name):
    count, ok, expected = facts.published_count(name)
    assert ok, f"{name}: {count:,} parameters, published {expected}"


def test_every_claim_about_the_models_holds():
    table = pd.DataFrame([vars(c) for c in facts.architecture_claims()])
    assert (table["verdict"] == facts.HOLDS).all(), table[table["verdict"] != facts.HOLDS]
    published = [n for n in models.list_models() if models.model_info(n).published_params]
    assert table["claim"].str.startswith(tuple(f"{n} has " for n in published)).sum() == len(published)
    measured = dict(zip(table["claim"], table["measured"], strict=True))
    assert measured["vgg16 has 138,357,544 parameters"] == "138,357,544"
    assert measured["LeNet-5's C1 has 122,304 connections"] == "122,304"
    assert measured["resnet20 has 0.27M parameters"] == "269,722 (0.27M)"


def test_inception_claims_are_counted_on_the_models_layers(monkeypatch):
    before = {c.claim: c for c in facts.inception_claims()}
    assert any(c.measured == "12.44M" for c in before.values())
    cin, c1, c3r, c3, _, c5, pool = googlenet.INCEPTION["3a"]
    monkeypatch.setitem(googlenet.INCEPTION, "3a", (cin, c1, c3r, c3, 24, c5, pool))
    after = facts.inception_claims()
    bottleneck = next(c for c in after if "bottleneck" in c.claim)
    assert "24 channels" in bottleneck.claim and bottleneck.measured == "18.67M"
    assert bottleneck.verdict == facts.FAILS, "a wider bottleneck no longer gives 12.4M"


def test_receptive_field_is_traced_not_assumed():
    stack = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.Conv2d(2, 2, 5, padding=2))
    assert facts.receptive_field(stack, 2) == 7
    assert facts.receptive_field(torch.nn.Conv2d(2, 2, 3, dilation=2, padding=2), 2) == 5
