"""A report as a list of blocks, rendered twice: Markdown (``report.md``, images linked
from ``figures/``) and one standalone HTML page (``report.html``: images embedded as
base64 data URIs, inline CSS, nothing fetched from the network).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    """A table: ``header`` and ``rows`` of already formatted cells (str)."""
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG under the report's directory; ``path`` is relative to it (``figures/x.png``)."""
    path: str
    caption: str
    alt: str = ""


@dataclass(frozen=True)
class Link:
    """A link to another file of the run directory (relative ``href``)."""
    text: str
    href: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> Document:
        self.blocks.extend(blocks)
        return self


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Table):
            if b.caption:
                out += [b.caption, ""]
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt or b.path}]({b.path})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Link):
            out += [f"[{b.text}]({b.href})", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
"""


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_NUMERIC = re.compile(r"[-+]?\d[\d.,]*( ± [\d.]+)?( / \d+)?|n/a")


def _td(cell) -> str:
    text = str(cell)
    cls = ' class="num"' if _NUMERIC.fullmatch(text) else ""  # numbers line up on the right
    return f"<td{cls}>{html.escape(text)}</td>"


def _html_block(b, base: Path) -> str:
    e = html.escape
    if isinstance(b, Heading):
        return f"<h{b.level}>{e(b.text)}</h{b.level}>"
    if isinstance(b, Paragraph):
        return f"<p>{e(b.text)}</p>"
    if isinstance(b, Table):
        cap = f"<caption>{e(b.caption)}</caption>" if b.caption else ""
        head = "".join(f"<th>{e(str(h))}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in b.rows)
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Image):
        return (f'<figure><img src="{_png_data_uri(base / b.path)}" alt="{e(b.alt or b.path)}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>")
    if isinstance(b, Link):
        return f'<p><a href="{e(b.href)}">{e(b.text)}</a></p>'
    raise TypeError(f"unknown report block {type(b).__name__}")


def to_html(doc: Document, base: Path) -> str:
    """One standalone page; image paths are read relative to ``base`` and embedded."""
    body = "\n".join(_html_block(b, Path(base)) for b in doc.blocks)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head>\n"
            f"<body><h1>{html.escape(doc.title)}</h1>\n{body}\n</body></html>\n")
