"""The self-contained HTML page: inline styles, figures embedded as base64 PNGs, tables rendered by
pandas' Styler. Nothing on the page refers to another file or to the network."""

import base64
import html
import json

import pandas as pd

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1300px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: .9em; } code { background: #f5f5f5; padding: 0 .2em; }
nav a { margin-right: 1em; }
"""
VERDICT_COLORS = {"holds": "#d9f2d9", "does not hold": "#f8d7d7", "not measured": "#eeeeee"}


def table(frame: pd.DataFrame, table_id: str, formats: dict | None = None) -> str:
    """A plain HTML table: no index, values escaped, numbers right-aligned, text left-aligned."""
    styler = frame.style.format(formats or {}, na_rep="–", escape="html").hide(axis="index")
    styler = styler.set_table_attributes(f'id="{table_id}"')
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        styler = styler.set_properties(subset=text, **{"text-align": "left"})
    numbers = [c for c in frame.columns if c not in text]
    if numbers:
        styler = styler.set_properties(subset=numbers, **{"white-space": "nowrap"})
    if "verdict" in frame.columns:
        styler = styler.map(
            lambda v: f"background-color: {VERDICT_COLORS.get(v, 'white')}", subset=["verdict"]
        )
    return styler.to_html(table_uuid=table_id)  # a fixed uuid: the same results give the same bytes


def figure(png: bytes, alt: str, figure_id: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img id="{figure_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def paragraph(text: str, css_class: str = "note") -> str:
    return f'<p class="{css_class}">{html.escape(text)}</p>'


def section(section_id: str, title: str, *parts: str) -> str:
    return f'<section id="{section_id}">\n<h2>{html.escape(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def key_values(values: dict, table_id: str) -> str:
    """A two-column table of settings; nested values shown as compact JSON."""
    rows = [
        {"setting": key, "value": value if isinstance(value, str) else json.dumps(value, sort_keys=True)}
        for key, value in values.items()
    ]
    return table(pd.DataFrame(rows, columns=["setting", "value"]), table_id)


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document; ``sections`` are (id, title, body html)."""
    nav = " ".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(section(sid, name, content) for sid, name, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def heading(text: str) -> str:
    """A heading within a section."""
    return f"<h3>{html.escape(text)}</h3>"
