"""The docs stay true mechanically: every ``python -m cnnrepro.<command> ...`` example in README.md
and docs/ parses with that command's own parser (nothing runs); every ``make <target>`` they name
exists; every module of the package and every Makefile target is named in docs/design.md; every
relative link points at a file (and heading) that exists; the README's results tables are the
shipped reference's."""

import argparse
import contextlib
import csv
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DESIGN = ROOT / "docs" / "design.md"
REFERENCE = ROOT / "reports" / "reference" / "quick-mnist5k"
# Shell variables the examples use, and a value each could take.
SHELL_VARIABLES = {"SLURM_ARRAY_TASK_ID": "0"}
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_texts(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block's lines (a trailing backslash joins the next) and
    of every inline code span, outside the blocks."""
    text = path.read_text()
    found = []
    for block in FENCE.finditer(text):
        first = text.count("\n", 0, block.start()) + 1
        lines = block.group(0).splitlines()[1:-1]
        pending, start = "", None
        for offset, line in enumerate(lines, start=first + 1):
            start = offset if not pending else start
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            found.append((start, pending + line))
            pending = ""
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for span in INLINE.finditer(prose):
        found.append((prose.count("\n", 0, span.start()) + 1, span.group(2).replace("\n", " ")))
    return found


def prose_of(path: Path) -> str:
    """The file's text with its fenced blocks blanked (line numbers kept)."""
    text = path.read_text()
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def cnnrepro_commands(text: str) -> list[tuple[str, list[str]]]:
    """(module, argv) of every ``-m cnnrepro.X ...`` in a shell line, also inside a quoted ``sh -c``."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # not shell (a sentence, or Python)
        return []
    commands = []
    for i, token in enumerate(tokens):
        if " " in token and "-m cnnrepro." in token:
            commands += cnnrepro_commands(token)
        if token == "-m" and i + 1 < len(tokens) and tokens[i + 1].startswith("cnnrepro."):
            argv = []
            for arg in tokens[i + 2 :]:
                if arg and set(arg) <= set("();<>|&"):
                    break
                argv.append(arg)
            commands.append((tokens[i + 1], argv))
    return commands


def examples() -> list:
    found = []
    for path in DOCS:
        for line, text in code_texts(path):
            for module, argv in cnnrepro_commands(text):
                if argv:  # a bare `python -m cnnrepro.x` names the command; it is no example
                    found.append(pytest.param(module, argv, id=f"{relative(path)}:{line}:{module}"))
    return found


def parser_of(module_name: str) -> argparse.ArgumentParser:
    """The command's own parser, its ``build_parser()`` (every command has one): the checks a
    command makes after parsing (a GPU for --device cuda, torchrun for --sync-bn) are not run."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__path__"):  # a package: python -m runs its __main__
        module = importlib.import_module(f"{module_name}.__main__")
    assert hasattr(module, "build_parser"), f"python -m {module_name} has no build_parser()"
    return module.build_parser()


def test_the_docs_have_examples_of_every_command():
    commands = {param.values[0] for param in examples()}
    assert {"cnnrepro.run", "cnnrepro.compare", "cnnrepro.report", "cnnrepro.inspect"} <= commands


@pytest.mark.parametrize("module, argv", examples())
def test_every_example_parses_with_its_commands_parser(module, argv):
    assert importlib.util.find_spec(module), f"python -m {module}: no such module"
    unknown = [name for arg in argv for name in re.findall(r"\$\{?(\w+)", arg) if name not in SHELL_VARIABLES]
    assert not unknown, f"shell variables without an example value (SHELL_VARIABLES): {unknown}"
    argv = [re.sub(r"\$\{?(\w+)\}?", lambda m: SHELL_VARIABLES[m.group(1)], arg) for arg in argv]
    parser = parser_of(module)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exit:
        assert exit.code == 0, f"python -m {module} {shlex.join(argv)}: {said.getvalue().strip()}"


def makefile_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return [t for t in re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)]


def test_every_make_target_the_docs_name_exists():
    targets = set(makefile_targets())
    wrong = [
        f"{relative(path)}:{line}: make {target}"
        for path in DOCS
        for line, text in code_texts(path)
        for target in re.findall(r"(?:^|[\s;&|(])make ([a-z][\w-]*)", text)
        if target not in targets
    ]
    assert not wrong, f"no such Makefile target: {wrong}"


def named_paths() -> list[str]:
    """What design.md's layout must name: every module of the package (a package's __init__.py by
    its directory), every script, the helpers of tests/ and benchmarks/ (not the test files)."""
    paths = []
    for path in sorted((ROOT / "cnnrepro").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        inner = path.parent != ROOT / "cnnrepro"
        paths.append(relative(path.parent) + "/" if path.name == "__init__.py" and inner else relative(path))
    paths += [relative(p) for p in sorted((ROOT / "scripts").iterdir()) if p.is_file()]
    for folder in ("tests", "benchmarks"):
        paths += [relative(p) for p in sorted((ROOT / folder).glob("*.py")) if not p.name.startswith("test_")]
    return paths + [".ci/run"]


def test_design_names_every_module_script_and_helper():
    design = DESIGN.read_text()
    missing = [path for path in named_paths() if f"`{path}`" not in design and f"{path}`" not in design]
    assert not missing, f"docs/design.md's layout does not name {missing}"


def test_design_names_every_makefile_target():
    design = DESIGN.read_text()
    missing = [t for t in makefile_targets() if f"make {t}`" not in design]
    assert not missing, f"docs/design.md does not name make {', make '.join(missing)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose_of(path), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    broken = []
    for path in DOCS:
        prose = INLINE.sub(lambda m: " " * len(m.group(0)), prose_of(path))
        for match in re.finditer(r"\]\(([^)\s]+)\)", prose):
            target = match.group(1)
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            where = (path.parent / file).resolve() if file else path
            line = prose.count("\n", 0, match.start()) + 1
            if not where.exists():
                broken.append(f"{relative(path)}:{line}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{relative(path)}:{line}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_page_of_the_docs():
    readme = (ROOT / "README.md").read_text()
    unlinked = [relative(page) for page in DOCS[1:] if f"]({relative(page)})" not in readme]
    assert not unlinked, f"README.md's Documentation table lacks {unlinked}"


def readme_table(header: str) -> list[list[str]]:
    """The rows of the README's table whose header row starts with ``header``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_readmes_classic_table_is_the_shipped_references():
    with open(REFERENCE / "runs.csv", newline="") as f:
        runs = [r for r in csv.DictReader(f) if r["suite"] == "classic" and r["seed"] == "0"]
    expected = [
        [
            r["model"],
            f"{int(r['params']):,}",
            f"{int(r['macs']):,}",
            f"{100 * float(r['test_acc']):.1f}%",
            f"{float(r['train_time_s']):.0f} s",
        ]
        for r in runs
    ]
    assert sorted(readme_table("| model | parameters |")) == sorted(expected)


def test_the_readmes_degradation_table_is_the_shipped_references():
    from cnnrepro.report import load_results, tables

    results = load_results(REFERENCE)
    table = tables.degradation_table(tables.degradation_curves(results.runs, results.epochs))
    expected = [
        [
            str(int(row.depth)),
            f"{100 * row.plain:.2f}% ({100 * row.plain_spread:.2f})",
            f"{100 * row.residual:.2f}% ({100 * row.residual_spread:.2f})",
        ]
        for row in table.itertuples()
    ]
    assert readme_table("| depth | plain | residual |") == expected


def test_the_readme_is_a_landing_page():
    """At most about 150 lines: the rest is docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160
