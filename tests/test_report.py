"""The report: generated from a small synthetic results store (every section, numbers equal to
summary.csv, self-contained, valid PNGs), the claims checker on the real models, and a headless
Chromium rendering it with no broken image."""

import base64
import errno
import hashlib
import html.parser
import io
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

from cnnrepro.models.facts import FAILS, HOLDS, NOT_MEASURED
from cnnrepro.report import NoResultsError, claims, figures, tables, write_report, writer
from cnnrepro.report.__main__ import main as report_main
from cnnrepro.store import ResultsStore

SECTIONS = [
    "summary",
    "images",
    "curves",
    "accuracy",
    "degradation",
    "kernels",
    "reproducibility",
    "claims",
    "environment",
]
EPOCHS = 3
# Final training error by depth: plain degrades, residual does not (He et al. Figure 6's shape).
PLAIN_ERROR = {20: 0.05, 56: 0.20}
RESIDUAL_ERROR = {20: 0.06, 56: 0.04}
# Two seeds around those errors: the means stay, the spread (greatest - least) is 2 pp.
SEED_OFFSET = {0: -0.01, 1: 0.01}


def record(store, suite, model, seed, final_train_acc, test_acc, dataset="mnist5k", profile="quick"):
    key = hashlib.sha256(f"{suite}-{model}-{seed}-{dataset}-{profile}".encode()).hexdigest()[:16]
    tag = {"suite": suite, "profile": profile, "key": key, "model": model, "seed": seed, "backend": "custom"}
    epochs = [
        tag
        | {
            "epoch": e,
            "train_loss": 2.0 / e,
            "train_acc": final_train_acc - 0.1 * (EPOCHS - e),
            "test_loss": 2.1 / e,
            "test_acc": test_acc - 0.05 * (EPOCHS - e),
            "epoch_time_s": 1.5,
            "train_examples_per_s": 1000.0 + seed,
            "test_examples_per_s": 4000.0,
        }
        for e in range(1, EPOCHS + 1)
    ]
    config = {"dataset": dataset, "epochs": EPOCHS, "width": 0.25, "batch_size": 64, "lr": 0.05}
    run = tag | {
        "dataset": dataset,
        "status": "finished",
        "epochs": EPOCHS,
        "train_acc": final_train_acc,
        "test_acc": test_acc,
        "params": 61_706 if model == "lenet5" else 270_000,
        "macs": 416_520,
        "train_time_s": 4.5,
        "train_examples_per_s": 1000.0 + seed,
        "test_examples_per_s": 4000.0,
        "weights_sha256": f"{seed:02d}" + "ab" * 31,
        "determinism": "matched" if seed == 0 else "not checked",
        "config": json.dumps(config),
    }
    store.record_run(key, epochs, run)


def bench_row(op, direction, shape, layout, times: dict, per_example=False):
    """A row as the benchmarks write it: the case, each implementation's median, the speedup."""
    (baseline, slow), (candidate, fast) = times.items()
    row = {"op": op, "direction": direction, "shape": shape, "layout": layout, "device": "cpu"}
    row |= {f"{impl}_median_s": t for impl, t in times.items()} | {"speedup": slow / fast, "others": ""}
    if per_example:
        row |= {f"{impl}_examples_per_s": int(shape.split("x")[0]) / t for impl, t in times.items()}
    return row


def write_bench(directory):
    directory.mkdir()
    speedups = [
        bench_row("lrn", "forward", "32x96x55x55", "contiguous", {"native": 0.010, "custom": 0.002})
        | {"others": "clone=0.40"},
        bench_row(
            "max_pool2d", "backward", "32x64x112x112", "channels_last", {"native": 0.005, "custom": 0.010}
        ),
    ]
    models = [
        bench_row("alexnet", "train", "64x1x64x64", "contiguous", {"native": 0.128, "custom": 0.1}, True)
    ]
    loops = [
        bench_row(
            "lenet5",
            "train pass",
            "4000x1x28x28 batch64",
            "contiguous",
            {"dataloader": 1.2, "runner": 0.4},
            True,
        )
    ]
    suite = [
        bench_row("degradation (quick)", "8 runs", "2 cores", "1 x 2 / 2 x 1", {"local": 300.0, "ray": 240.0})
    ]
    for name, rows in (("speedups", speedups), ("models", models), ("loops", loops), ("suite", suite)):
        pd.DataFrame(rows).to_csv(directory / f"{name}.csv", index=False)
    (directory / "env.json").write_text(json.dumps({"torch": "2.13.0", "threads": 2}))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    store = ResultsStore(root / "quick-mnist5k")
    record(store, "classic", "lenet5", 0, 0.98, 0.90)
    record(store, "classic", "lenet5", 1, 0.96, 0.80)
    record(store, "classic", "alexnet", 0, 0.97, 0.85)  # one seed: no spread
    for depth, seed in itertools.product(PLAIN_ERROR, SEED_OFFSET):
        offset = SEED_OFFSET[seed]
        record(store, "degradation", f"plain{depth}", seed, 1 - PLAIN_ERROR[depth] - offset, 0.9)
        record(store, "degradation", f"resnet{depth}", seed, 1 - RESIDUAL_ERROR[depth] - offset, 0.9)
    store.write_env(
        {"command": "python -m cnnrepro.run --all", "torch": "2.13.0", "profile": {"name": "quick"}}
    )
    write_bench(root / "bench")
    write_report(store.directory)
    return store.directory


class Tables(html.parser.HTMLParser):
    """Every <table id=...> of a page as a list of rows of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row, self.cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.current = self.tables.setdefault(dict(attrs).get("id"), [])
        elif tag == "tr" and self.current is not None:
            self.row = []
            self.current.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def page_tables(directory) -> dict[str, list[dict]]:
    parser = Tables()
    parser.feed((directory / "index.html").read_text())
    return {
        tid: [dict(zip(rows[0], row, strict=True)) for row in rows[1:]] for tid, rows in parser.tables.items()
    }


def test_every_section_and_figure_is_present(report_dir):
    page = (report_dir / "index.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    for name in ("learning_curves", "accuracy_vs_cost", "degradation", "kernel_speedups", "model_speedups"):
        png = (report_dir / f"{name}.png").read_bytes()
        assert f'id="figure-{name}"' in page
        assert base64.b64encode(png).decode() in page, f"{name}.png is the image embedded in the page"
    assert "No benchmark results" not in page
    assert {
        "summary-table",
        "degradation-table",
        "kernel-table",
        "model-speed-table",
        "loop-table",
        "suite-table",
        "reproducibility-table",
        "claims-table",
        "environment-table",
    } <= set(page_tables(report_dir))


def test_every_png_is_a_valid_image(report_dir):
    for path in report_dir.glob("*.png"):
        image = imread(io.BytesIO(path.read_bytes()), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, path.name


def test_html_numbers_match_summary_csv(report_dir):
    summary = pd.read_csv(report_dir / "summary.csv")
    shown = page_tables(report_dir)["summary-table"]
    assert len(shown) == len(summary) == 6

    def sd(value: float) -> str:
        return "–" if pd.isna(value) else f"{value:.3f}"

    for row, cells in zip(summary.itertuples(), shown, strict=True):
        assert cells["model"] == row.model and cells["seeds"] == str(row.seeds)
        assert cells["params"] == f"{row.params:,}" and cells["macs"] == f"{row.macs:,}"
        assert cells["train acc"] == f"{row.train_acc_mean:.3f}" and cells["train acc sd"] == sd(
            row.train_acc_sd
        )
        assert cells["test acc"] == f"{row.test_acc_mean:.3f}" and cells["test acc sd"] == sd(row.test_acc_sd)
        assert cells["train examples/s"] == f"{row.train_examples_per_s:,.0f}"
        assert cells["s/epoch"] == f"{row.epoch_time_s:.2f}"


def test_summary_statistics_over_seeds(report_dir):
    lenet = pd.read_csv(report_dir / "summary.csv").set_index("model").loc["lenet5"]
    assert lenet["seeds"] == "0 1"
    assert lenet["test_acc_mean"] == pytest.approx(0.85)
    assert lenet["test_acc_sd"] == pytest.approx(0.0707107, rel=1e-5), "sample sd of 0.90 and 0.80"
    assert lenet["train_examples_per_s"] == pytest.approx(1000.5)
    assert lenet["epoch_time_s"] == pytest.approx(1.5)
    alexnet = pd.read_csv(report_dir / "summary.csv").set_index("model").loc["alexnet"]
    assert alexnet["seeds"] == "0" and pd.isna(alexnet["test_acc_sd"]), "one seed has no spread, not 0"
    (shown,) = [r for r in page_tables(report_dir)["summary-table"] if r["model"] == "alexnet"]
    assert shown["test acc sd"] == shown["train acc sd"] == "–"


def test_the_page_refers_to_nothing_outside_itself(report_dir):
    page = (report_dir / "index.html").read_text()
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in re.findall(r'\bhref="([^"]*)"', page))
    for forbidden in ("http://", "https://", "url(", "@import", "<script", "<link", "<iframe"):
        assert forbidden not in page


def test_kernel_and_degradation_tables_show_the_data(report_dir):
    tables_ = page_tables(report_dir)
    kernels = tables_["kernel-table"]
    assert [k["speedup"] for k in kernels] == ["5.00x", "0.50x"]
    assert kernels[0]["native ms"] == "10.000" and kernels[0]["custom ms"] == "2.000"
    assert [k["references (time / custom)"] for k in kernels] == ["clone=0.40", ""]
    degradation = {int(r["depth"]): r for r in tables_["degradation-table"]}
    assert degradation[56]["plain"] == "20.00" and degradation[56]["residual"] == "4.00"
    assert degradation[56]["plain spread"] == "2.00" and degradation[20]["residual spread"] == "2.00"
    (alexnet,) = tables_["model-speed-table"]
    assert (
        alexnet["native examples/s"] == "500"
        and alexnet["custom examples/s"] == "640"
        and alexnet["speedup"] == "1.28x"
    )
    (lenet,) = tables_["loop-table"]
    assert lenet["runner examples/s"] == "10,000" and lenet["speedup"] == "3.00x"
    (suite,) = tables_["suite-table"]
    assert (suite["local s"], suite["ray s"], suite["ray - local s"], suite["speedup"]) == (
        "300.00",
        "240.00",
        "-60.00",
        "1.25x",
    )
    repro = tables_["reproducibility-table"]
    assert {r["determinism"] for r in repro} == {"matched", "not checked"}
    assert all(len(r["weights_sha256"]) == 64 for r in repro)


def test_the_report_is_regenerated_from_the_store_alone(report_dir):
    before = {p.name: p.read_bytes() for p in report_dir.iterdir() if p.suffix in (".html", ".png", ".csv")}
    for name in ("index.html", "summary.csv", "degradation.png"):
        (report_dir / name).unlink()
    assert report_main([str(report_dir)]) == 0
    after = {p.name: p.read_bytes() for p in report_dir.iterdir() if p.suffix in (".html", ".png", ".csv")}
    assert after == before, "the same store gives the same report, byte for byte"


def test_out_writes_the_report_elsewhere_and_leaves_the_store_untouched(report_dir, tmp_path):
    before = {p.name: p.read_bytes() for p in report_dir.iterdir() if p.is_file()}
    assert report_main([str(report_dir), "--out", str(tmp_path / "elsewhere")]) == 0
    assert {p.name: p.read_bytes() for p in report_dir.iterdir() if p.is_file()} == before
    written = {p.name: p.read_bytes() for p in (tmp_path / "elsewhere").iterdir()}
    assert written["index.html"] == before["index.html"]
    assert {n for n in before if n.endswith((".png", ".html"))} <= set(written)


def test_a_store_that_cannot_be_written_is_one_line_naming_it(report_dir, monkeypatch, capsys):
    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(writer, "write_atomic", read_only)
    assert report_main([str(report_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(report_dir) in err and "Read-only file system" in err
    assert "--out" in err


def test_a_directory_without_results_is_a_clear_error(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "runs.csv is missing" in capsys.readouterr().err
    with pytest.raises(NoResultsError, match="train first"):
        write_report(tmp_path / "nowhere")


def test_without_benchmarks_the_kernel_section_says_how_to_get_them(tmp_path):
    store = ResultsStore(tmp_path / "run")
    record(store, "classic", "lenet5", 0, 0.98, 0.90)
    page = write_report(store.directory).read_text()
    assert "No benchmark results" in page and "make bench" in page
    assert "The degradation suite has not run" in page


# --- the claims checker ----------------------------------------------------------------------


def claim_table(runs=None, degradation=None):
    runs = (
        runs
        if runs is not None
        else pd.DataFrame(columns=["model", "dataset", "profile", "status", "test_acc"])
    )
    degradation = (
        degradation if degradation is not None else pd.DataFrame(columns=["depth", "plain", "residual"])
    )
    return claims.check_claims(runs, degradation)


@pytest.mark.parametrize(
    "plain, residual, verdict",
    [
        ((0.05, 0.20), (0.06, 0.04), HOLDS),
        ((0.05, 0.06), (0.06, 0.04), FAILS),
        ((0.05, 0.20), (0.04, 0.09), FAILS),
    ],
)
def test_degradation_claim_verdicts(plain, residual, verdict):
    table = pd.DataFrame({"depth": [20, 56], "plain": plain, "residual": residual})
    assert claims.degradation_claim(table).verdict == verdict
    assert claims.degradation_claim(table.iloc[:1]).verdict == NOT_MEASURED


def test_published_results_are_compared_only_where_dataset_and_recipe_match():
    runs = pd.DataFrame(
        [
            {
                "model": "resnet20",
                "dataset": "cifar10",
                "profile": "paper",
                "status": "finished",
                "test_acc": 0.915,
            },
            {
                "model": "resnet56",
                "dataset": "mnist5k",
                "profile": "quick",
                "status": "finished",
                "test_acc": 0.99,
            },
            {
                "model": "lenet5",
                "dataset": "fashion-mnist",
                "profile": "d2l",
                "status": "finished",
                "test_acc": 0.70,
            },
        ]
    )
    rows = claim_table(runs).set_index("claim")
    resnet20 = rows.loc["ResNet-20 reaches 8.75% CIFAR-10 test error"]
    assert resnet20["verdict"] == HOLDS and resnet20["measured"].startswith("8.50%")
    resnet56 = rows.loc["ResNet-56 reaches 6.97% CIFAR-10 test error"]
    assert resnet56["verdict"] == NOT_MEASURED and "quick on mnist5k" in resnet56["why"]
    lenet = rows.loc["lenet5 reaches 0.78 Fashion-MNIST test accuracy in 10 epochs"]
    assert lenet["verdict"] == FAILS and lenet["measured"].startswith("0.700")


# --- a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Appended to a copy of the page: after load, it writes how many images failed to decode.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((img) => !img.complete || img.naturalWidth === 0).length;
  document.body.setAttribute("data-probe", `images=${images.length} broken=${broken}`);
});
</script>"""


ACCURACY_PROBE = """<script>
window.addEventListener("load", () => {
  const img = document.getElementById("figure-accuracy_vs_cost");
  // pandas' Styler writes its own id (T_<uuid>) before ours, and the first one counts
  const rows = Array.from(document.querySelectorAll("#T_accuracy-table tbody tr"));
  const sds = rows.map((row) => row.lastElementChild.innerText.trim()).join("|");
  document.body.setAttribute(
    "data-accuracy", `shown=${img.width} natural=${img.naturalWidth} rows=${rows.length} sds=${sds}`
  );
});
</script>"""


def probe_accuracy(flags: list[str], page: Path, tmp_path: Path) -> tuple[int, int, int, str]:
    """(the accuracy figure's rendered width, its own width, the rows of its table, its sd cells
    joined by |) as Chromium lays the page out at 1300 px."""
    probed = tmp_path / "accuracy.html"
    probed.write_text(page.read_text().replace("</body>", ACCURACY_PROBE + "</body>"))
    dom = subprocess.run(
        [*flags, "--window-size=1300,2400", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = re.search(r'data-accuracy="shown=(\d+) natural=(\d+) rows=(\d+) sds=([^"]*)"', dom)
    assert found, "the probe ran"
    return int(found[1]), int(found[2]), int(found[3]), found[4]


def probe_images(flags: list[str], page: Path, tmp_path: Path) -> tuple[int, int]:
    """(images, broken images) of ``page`` as Chromium loads it, counted by IMAGE_PROBE."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = re.search(r'data-probe="images=(\d+) broken=(\d+)"', dom)
    assert found, "the probe ran"
    return int(found[1]), int(found[2])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_chromium_renders_the_page_with_no_broken_image(report_dir, tmp_path):
    flags = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "page.png"
    subprocess.run(
        [*flags, "--window-size=1300,2400", f"--screenshot={shot}", (report_dir / "index.html").as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = imread(shot, format="png")
    assert image.shape[:2] == (2400, 1300) and image.std() > 0.05, "a rendered page, not a blank one"

    assert probe_images(flags, report_dir / "index.html", tmp_path) == (6, 0)
    shown, natural, rows, sds = probe_accuracy(flags, report_dir / "index.html", tmp_path)
    assert shown >= 0.9 * natural, "the accuracy figure at (about) its own size: its numbers readable"
    assert rows == len(pd.read_csv(report_dir / "summary.csv")), "the table names every numbered point"
    assert sds.split("|")[:2] == ["0.071", "–"], "lenet5's two seeds' sd; alexnet's one seed: a dash, not 0"


def test_the_degradation_figure_draws_one_kind_alone():
    """--models 'plain*' records plain nets only: the table has no residual numbers, the figure
    still draws."""
    runs = pd.DataFrame(
        {"suite": "degradation", "key": ["a", "b", "c"], "model": ["plain20", "plain56", "plain56"]}
    )
    epochs = runs[["key", "model"]].assign(epoch=1, train_acc=[0.9, 0.8, 0.7])
    curves = tables.degradation_curves(runs, epochs)
    table = tables.degradation_table(curves)
    assert table["residual"].isna().all() and table["plain_spread"].round(6).tolist()[1] == 0.1
    assert pd.isna(table["plain_spread"].iloc[0]), "plain20 ran one seed: no spread"
    assert figures.png_bytes(figures.degradation(curves, "plain only")).startswith(b"\x89PNG")


def label_boxes(fig) -> list:
    """Every label's text box (its leader line left out) on each axes of a drawn figure."""
    renderer = fig.canvas.get_renderer()
    return [[Text.get_window_extent(t, renderer) for t in ax.texts] for ax in fig.axes]


def test_accuracy_labels_never_collide_and_the_log_axes_read_plainly():
    """A cluster of models at nearly the same size, time and accuracy (as a quick profile's top
    row): every number is drawn, none overlaps another or a point, and both x axes are labelled in
    plain numbers at two or more ticks."""
    n = 24
    summary = pd.DataFrame(
        {
            "suite": ["classic"] * 12 + ["degradation"] * 12,
            "model": [f"m{i}" for i in range(n)],
            "params": [60_000 + 500 * i for i in range(n)],
            "train_time_s": [4.5 + 0.01 * i for i in range(n)],
            "test_acc_mean": [0.97 + 0.0005 * (i % 5) for i in range(n)],
            "test_acc_sd": [float("nan") if i % 2 else 0.002 for i in range(n)],
        }
    )
    fig = figures.accuracy_vs_cost(summary)
    figures.png_bytes(fig)  # drawn as the report draws it
    for ax, boxes in zip(fig.axes, label_boxes(fig), strict=True):
        assert sorted(int(t.get_text()) for t in ax.texts) == list(range(1, n + 1))
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), "two numbers overlap"
        points = ax.transData.transform(summary[["params", "test_acc_mean"]].to_numpy(float))
        if ax is fig.axes[1]:
            points = ax.transData.transform(summary[["train_time_s", "test_acc_mean"]].to_numpy(float))
        for box in boxes:
            assert not any(box.contains(x, y) for x, y in points), "a number covers a point"
        ticks = [
            t.get_text()
            for t in ax.get_xticklabels()
            if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]
        ]
        assert len(ticks) >= 2 and not any("$" in t for t in ticks), ticks


def test_plain_numbers():
    assert [figures.plain_number(v) for v in (0.5, 20, 100, 2500, 60_000, 3e6, 1.5e9)] == [
        "0.5", "20", "100", "2.5k", "60k", "3M", "1.5G",
    ]  # fmt: skip
