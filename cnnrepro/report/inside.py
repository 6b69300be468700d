"""The report's "Inside the networks" section, made from the store's checkpoints (cnnrepro.inspect):
for each model of the classic suite (its lowest seed's finished run), one fixed test image's
feature maps at a few depths and the first convolution's filters, small, with every default
layer's full-size PNG in inside/<run>/ beside index.html; the confusion matrix on the run's test
split (counts and per-class accuracy); and the test images it gets most confidently wrong. A store
without checkpoints (a shipped reference) gets a note saying so instead."""

from pathlib import Path

import pandas as pd

from cnnrepro.inspect import InspectError, load_run
from cnnrepro.inspect.confusion import confident_mistakes, confusion_matrix, test_probabilities
from cnnrepro.inspect.inspection import inspect_image, test_image, top_predictions, write_inspection
from cnnrepro.inspect.layers import first_convolution
from cnnrepro.inspect.pictures import OVERVIEW_MAPS, SCALE, input_image, mistakes_figure, overview_figure
from cnnrepro.inspect.stored import StoredRun, checkpoint_path
from cnnrepro.report import html
from cnnrepro.report.figures import png_bytes
from cnnrepro.report.results import Results

SUITE = "classic"
FIXED_IMAGE = 0  # the test image every model is shown
DEPTHS = 4  # layers shown small, evenly spaced over the default layers with maps wider than 1 x 1
MISTAKES = 6
FOLDER = "inside"  # beside index.html


def classic_runs(runs: pd.DataFrame) -> list[dict]:
    """The runs.csv row of each classic-suite model's lowest finished seed, in the order they ran."""
    finished = runs[(runs["suite"] == SUITE) & (runs["status"] == "finished")]
    firsts = finished.sort_values("seed", kind="stable").drop_duplicates("model")
    return [row.to_dict() for _, row in firsts.sort_index().iterrows()]


def inside_section(results: Results, out: Path) -> str:
    """The section's HTML; writes the full-size PNGs under ``out``/inside/."""
    rows = classic_runs(results.runs)
    if not rows:
        return html.paragraph(f"No finished {SUITE}-suite run in this store.")
    if not any(checkpoint_path(results.directory, row).exists() for row in rows):
        return html.paragraph(
            "This store has no checkpoints (a shipped reference store has none), so nothing inside the "
            "networks can be shown: train the runs here (python -m cnnrepro.run) to see it."
        )
    parts, failures = [html.paragraph(INTRO)], []
    for row in rows:
        try:
            run = load_run(results.directory, row)
        except InspectError as error:
            failures.append(html.paragraph(str(error)))
            continue
        parts += [
            html.heading(f"{run.config.model} (seed {run.config.seed}, run {run.row['key']})"),
            *overview_part(run, Path(out)),
            *errors_part(run),
        ]
    return "\n".join(parts + failures)


INTRO = (
    f"Each classic model's lowest seed, from its final checkpoint (checked against runs.csv's weights "
    f"hash). Test image {FIXED_IMAGE}'s feature maps at {DEPTHS} depths (the first {OVERVIEW_MAPS} maps "
    f"of each; each map standardized and shown from -{SCALE:g} to +{SCALE:g} sd) and the first "
    "convolution's filters (each scaled to its own range). Every default layer's full-size PNG is in "
    f"{FOLDER}/<run>/ beside this page (python -m cnnrepro.inspect makes them for any run and image). "
    "Then the confusion matrix on the run's test split (rows: true class; columns: predicted) and the "
    "test images it gets most confidently wrong."
)


def spaced(items: list, count: int) -> list:
    """``count`` items evenly spaced from the first to the last (all of them if fewer)."""
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def overview_part(run: StoredRun, out: Path) -> list[str]:
    """The fixed test image's prediction and overview figure (maps at DEPTHS depths, filters);
    writes every default layer's full-size PNG under ``out``/inside/<run>/."""
    model = run.config.model
    image, label = test_image(run, FIXED_IMAGE)
    source = f"test-{FIXED_IMAGE}"
    write_inspection(run, out / FOLDER / run.name / source, image, label, source, None)
    maps, logits, _ = inspect_image(run, image, None)
    wide = [path for path, output in maps.items() if output[0].numel() > 1] or list(maps)  # not 1 x 1
    shown = {path: maps[path] for path in spaced(wide, DEPTHS)}
    convolution = first_convolution(run.model)
    filters = (convolution[0], convolution[1].weight) if convolution else None
    pixels = input_image(image, run.dataset.mean, run.dataset.std)
    title = f"{model} seed {run.config.seed}: test image {FIXED_IMAGE}, class {label}"
    best = top_predictions(logits, 1)[0]
    return [
        html.paragraph(
            f"Test image {FIXED_IMAGE} (class {label}): predicted {best['class']} with probability "
            f"{best['probability']:.3f}. Full-size maps of every default layer: "
            f"{FOLDER}/{run.name}/{source}/."
        ),
        html.figure(
            png_bytes(overview_figure(title, pixels, filters, shown)),
            f"{model}: feature maps and first-layer filters",
            f"figure-inside-{model}",
        ),
    ]


def errors_part(run: StoredRun) -> list[str]:
    """The confusion matrix (counts, per-class accuracy) and the most confident mistakes."""
    model, classes = run.config.model, run.dataset.num_classes
    labels = run.test.labels
    probabilities = test_probabilities(run)
    counts = confusion_matrix(labels, probabilities.argmax(dim=1), classes)
    table = pd.DataFrame(counts.numpy(), columns=[str(c) for c in range(classes)])
    table.insert(0, "true", [str(c) for c in range(classes)])
    table["accuracy"] = (counts.diag() / counts.sum(dim=1).clamp(min=1)).numpy()
    accuracy = float(counts.diag().sum()) / len(labels)
    parts = [
        html.paragraph(f"Confusion matrix on the run's {len(labels)} test images (accuracy {accuracy:.3f}):"),
        html.table(table, f"confusion-{model}", {"accuracy": "{:.3f}"}),
    ]
    wrong = confident_mistakes(labels, probabilities, MISTAKES)
    if wrong:
        confidence, predicted = probabilities.max(dim=1)
        images = [input_image(image, run.dataset.mean, run.dataset.std) for image in run.test.rows(wrong)]
        titles = [
            f"#{i}: {int(labels[i])} as {int(predicted[i])} ({float(confidence[i]):.2f})" for i in wrong
        ]
        parts += [
            html.paragraph(
                f"The {len(wrong)} test images it gets most confidently wrong (true class as predicted):"
            ),
            html.figure(
                png_bytes(mistakes_figure(images, titles)),
                f"{model}: confident mistakes",
                f"figure-mistakes-{model}",
            ),
        ]
    return parts
