"""Reproduction verdicts: two results stores matched run by run (identical, within noise, differs,
only in one), the noise measured from seeds or a stated default, what differs between the
environments, the exit code, one-line errors for input that is not two comparable stores, the
report's Reproduction section, and the shipped reference store."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from cnnrepro.compare import main as compare_main
from cnnrepro.experiments import PROFILES, REFERENCES, Request, plan_suite
from cnnrepro.report import write_report
from cnnrepro.report.verdicts import DEFAULT_TOLERANCE, VERDICTS, compare, load_store
from cnnrepro.store import (
    ENV_JSON,
    RESULT_CHECKS,
    RESULT_FIELDS,
    RESULTS_CSV,
    RUN_CHECKS,
    RUN_FIELDS,
    RUNS_CSV,
    STORE_SCHEMA,
    ResultsStore,
    read_rows,
)

ENV = {"build_info": {"cpu_flags": "-march=x86-64-v3", "compiler": "gcc 12"}, "numerics": {"tf32": False}}


def record(
    store, model, seed, test_acc, train_acc, weights="a", torch_version="2.13.0", threads=2, added=None
):
    config = {"model": model, "seed": seed, "epochs": 6, "lr": 0.05} | (added or {})
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    row = {
        "suite": "classic", "profile": "quick", "key": key, "model": model, "dataset": "mnist5k",
        "seed": seed, "backend": "custom", "status": "finished", "epochs": 6, "train_acc": train_acc,
        "test_acc": test_acc,
        "params": 100, "macs": 1000, "train_time_s": 1.0, "train_examples_per_s": 10.0,
        "test_examples_per_s": 10.0, "weights_sha256": hashlib.sha256(weights.encode()).hexdigest(),
        "determinism": "not checked", "config": json.dumps(config, sort_keys=True), "device": "cpu",
        "threads": threads, "torch": torch_version, "code_revision": "git:0123456789ab",
    }  # fmt: skip
    store.record_run(key, [], row)


def run(model, seed, test_acc, train_acc, **more) -> dict:
    return dict(model=model, seed=seed, test_acc=test_acc, train_acc=train_acc, **more)


def make_store(path: Path, runs: list[dict], env: dict = ENV) -> Path:
    store = ResultsStore(path)
    for run in runs:
        record(store, **run)
    store.write_env(env)
    return path


@pytest.fixture
def stores(tmp_path):
    """A: lenet5 and vgg11 over 3 seeds (each spreading 0.02), resnet20 and alexnet one seed.
    B: lenet5 seed 0 with A's bits, seed 1 with other bits 0.01 away on another torch; vgg11 seed 0
    0.05 away with 1 thread; resnet20 0.005 away (one seed: the default tolerance); nin; and
    other build flags."""
    a = make_store(
        tmp_path / "a",
        [
            *(run("lenet5", s, 0.95 + 0.01 * s, 0.96 + 0.01 * s, weights=f"l{s}") for s in range(3)),
            *(run("vgg11", s, 0.90 + 0.01 * s, 0.91 + 0.01 * s, weights=f"v{s}") for s in range(3)),
            dict(model="resnet20", seed=0, test_acc=0.97, train_acc=0.98, weights="r0"),
            dict(model="alexnet", seed=0, test_acc=0.93, train_acc=0.94, weights="x0"),
        ],
    )  # fmt: skip
    b = make_store(
        tmp_path / "b",
        [
            dict(model="lenet5", seed=0, test_acc=0.95, train_acc=0.96, weights="l0"),
            run("lenet5", 1, 0.97, 0.965, weights="other", torch_version="2.14.1"),
            dict(model="vgg11", seed=0, test_acc=0.85, train_acc=0.91, weights="other", threads=1),
            dict(model="resnet20", seed=0, test_acc=0.965, train_acc=0.98, weights="other"),
            dict(model="nin", seed=0, test_acc=0.9, train_acc=0.9, weights="n0"),
        ],
        ENV | {"build_info": {"cpu_flags": "-march=x86-64", "compiler": "gcc 12"}},
    )  # fmt: skip
    return a, b


def verdicts(table) -> dict:
    return {(r["model"], r["seed"]): r for r in table.to_dict("records")}


def test_every_pair_gets_its_verdict_and_tolerance(stores):
    a, b = stores
    rows = verdicts(compare(load_store(a, "A"), load_store(b, "B")))
    assert rows["lenet5", 0]["verdict"] == "identical" and rows["lenet5", 0]["environment differences"] == ""
    lenet1 = rows["lenet5", 1]
    assert lenet1["verdict"] == "within noise"  # 0.01 apart, lenet5's seeds spread 0.02 in A
    assert lenet1["tolerance"] == pytest.approx(0.02) and lenet1["tolerance from"] == "seed spread in A and B"
    assert rows["vgg11", 0]["tolerance from"] == "seed spread in A"
    assert rows["vgg11", 0]["verdict"] == "differs"  # 0.05 apart, spread 0.02
    resnet = rows["resnet20", 0]
    assert resnet["verdict"] == "within noise" and resnet["tolerance"] == DEFAULT_TOLERANCE
    assert resnet["tolerance from"] == "default (one seed)"
    assert rows["alexnet", 0]["verdict"] == "only in A" and rows["nin", 0]["verdict"] == "only in B"


def test_fields_added_at_their_defaults_leave_the_seed_spread_matched(tmp_path):
    """B recorded its configs after fields were added (runs.csv then holds them at their defaults,
    betas as a JSON list): its seeds still group with A's config for the tolerance."""
    added = {"optimizer": "sgd", "betas": [0.9, 0.999], "augment": [], "warmup_steps": 0}
    a = make_store(
        tmp_path / "a", [run("lenet5", s, 0.95 + 0.01 * s, 0.96, weights=f"l{s}") for s in range(3)]
    )
    b = make_store(tmp_path / "b", [run("lenet5", s, 0.95, 0.96, weights="o", added=added) for s in range(2)])
    rows = verdicts(compare(load_store(a, "A"), load_store(b, "B")))
    assert rows["lenet5", 0]["tolerance from"] == "seed spread in A and B"


def test_what_differs_between_the_environments_is_named(stores):
    a, b = stores
    rows = verdicts(compare(load_store(a, "A"), load_store(b, "B")))
    assert "torch 2.13.0 -> 2.14.1" in rows["lenet5", 1]["environment differences"]
    assert "threads 2 -> 1" in rows["vgg11", 0]["environment differences"]
    assert "build flags -march=x86-64-v3 -> -march=x86-64" in rows["vgg11", 0]["environment differences"]
    assert "compiler" not in rows["vgg11", 0]["environment differences"]  # the same on both sides


def test_a_different_status_differs(tmp_path):
    a = make_store(tmp_path / "a", [dict(model="lenet5", seed=0, test_acc=0.9, train_acc=0.9)])
    b = make_store(tmp_path / "b", [dict(model="lenet5", seed=0, test_acc=0.9, train_acc=0.9, weights="b")])
    runs = (b / RUNS_CSV).read_text().replace("finished", "diverged")
    (b / RUNS_CSV).write_text(runs)
    assert compare(load_store(a, "A"), load_store(b, "B"))["verdict"].tolist() == ["differs"]


def test_the_command_prints_counts_writes_compare_csv_and_exits_1_when_something_differs(stores, capsys):
    a, b = stores
    assert compare_main([str(a), str(b)]) == 1
    said = capsys.readouterr().out
    assert "1 identical, 2 within noise, 1 differ, 4 only in A, 1 only in B" in said
    written = pd.read_csv(b / "compare.csv")
    assert len(written) == 9 and set(written["verdict"]) == set(VERDICTS)
    assert compare_main([str(a), str(a), "--out", str(b / "self.csv")]) == 0
    assert "8 identical, 0 within noise, 0 differ" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.mkdir(), "runs.csv is missing"),
        (lambda p: (p.mkdir(), (p / RUNS_CSV).write_text(",".join(RUN_FIELDS) + "\n")), "it holds no rows"),
        (lambda p: (p.mkdir(), (p / RUNS_CSV).write_text(",".join(RUN_FIELDS) + "\nnot,a,row\n")), "damaged"),
    ],
)
def test_input_that_is_not_a_store_is_one_line_and_exit_2(stores, tmp_path, capsys, make, said):
    a, _ = stores
    bad = tmp_path / "bad"
    make(bad)
    assert compare_main([str(a), str(bad)]) == 2
    err = capsys.readouterr().err
    assert said in err and str(bad) in err and len(err.strip().splitlines()) == 1


def test_stores_of_different_schemas_are_not_compared(stores, capsys):
    a, b = stores
    env = json.loads((b / ENV_JSON).read_text()) | {"store_schema": STORE_SCHEMA + 1}
    (b / ENV_JSON).write_text(json.dumps(env))
    assert compare_main([str(a), str(b)]) == 2
    assert f"has store schema {STORE_SCHEMA} but {b} has {STORE_SCHEMA + 1}" in capsys.readouterr().err


def test_the_report_against_a_reference_has_a_reproduction_section(stores):
    a, b = stores
    index = write_report(b, against=a)
    page = index.read_text()
    assert '<section id="reproduction">' in page and "1 identical, 2 within noise, 1 differ" in page
    assert "torch 2.13.0 -&gt; 2.14.1" in page or "torch 2.13.0 -> 2.14.1" in page
    assert '<section id="reproduction">' not in write_report(a).read_text()


def test_the_shipped_reference_loads_and_has_the_current_schema():
    reference = REFERENCES / "quick-mnist5k"
    for name, fields, checks in (
        (RUNS_CSV, RUN_FIELDS, RUN_CHECKS),
        (RESULTS_CSV, RESULT_FIELDS, RESULT_CHECKS),
    ):
        rows, damaged = read_rows(reference / name, fields, checks)
        assert rows and not damaged, name
        assert list(rows[0]) == fields, f"{name} has every column of the current schema, in order"
    store = load_store(reference, "the reference")
    assert store.env["store_schema"] == STORE_SCHEMA
    assert compare(store, store)["verdict"].eq("identical").all()
    assert not (reference / "checkpoints").exists()
    # It holds make run's plan, run for run: a recipe change needs make reference.
    quick = PROFILES["quick"]  # make run's: python -m cnnrepro.run --all
    plan = plan_suite(Request(all_suites=True), quick, quick.dataset)
    assert set(store.runs["key"]) == {config.key() for _, config in plan}, "make reference is due"
