"""A self-contained HTML report: sections of text, tables, figures and links, readable from disk.

The report only refers to files inside its own folder by relative paths, embeds its CSS,
and loads nothing from the network, so it opens the same way from a file manager, a
browser on another machine, or an archive.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._files import atomic_write

__all__ = ["Section", "atomic_write_text", "render_report"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of one."""
    atomic_write(path, text.encode("utf-8"))


@dataclass
class Section:
    """One part of the report. ``figures`` and ``links`` are paths relative to the report's folder."""

    title: str
    lines: list[str] = field(default_factory=list)  # short paragraphs, plain text
    table: list[list[str]] = field(default_factory=list)  # first row is the header
    figures: list[tuple[str, str]] = field(default_factory=list)  # (relative path, caption)
    links: list[tuple[str, str]] = field(default_factory=list)  # (relative path, label)
    notes: list[tuple[str, str]] = field(
        default_factory=list
    )  # (term, explanation), e.g. a quote and its check
    status: str = "done"  # "done", "failed", "interrupted", "skipped"


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d232a;
       background: #f6f7f9; }
header { background: #1d3557; color: #fff; padding: 24px 32px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; opacity: .85; }
main { max-width: 1040px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; margin: 18px 0;
          padding: 16px 22px; }
section h2 { margin: 0 0 8px; font-size: 19px; }
.badge { font-size: 12px; padding: 2px 8px; border-radius: 10px; margin-left: 8px; vertical-align: middle; }
.done { background: #d8f3dc; color: #1b4332; } .failed { background: #ffd6d6; color: #7a1111; }
.interrupted, .skipped { background: #fff3bf; color: #5c4400; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e4e7eb; padding: 4px 12px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f2f5; }
figure { display: inline-block; margin: 8px 12px 8px 0; vertical-align: top; max-width: 480px; }
figure img { max-width: 100%; border: 1px solid #e4e7eb; }
figcaption { font-size: 13px; color: #555; }
ul.links { padding-left: 18px; }
dt { font-style: italic; margin-top: 10px; } dd { margin: 2px 0 0 18px; color: #333; }
footer { color: #667; font-size: 13px; }
"""


def _section_html(s: Section) -> str:
    parts = [f'<section id="{html.escape(_slug(s.title))}">']
    parts.append(f'<h2>{html.escape(s.title)}<span class="badge {s.status}">{s.status}</span></h2>')
    parts += [f"<p>{html.escape(line)}</p>" for line in s.lines]
    if s.table:
        head, *rows = s.table
        parts.append(
            "<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead>"
        )
        parts.append("<tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
    if s.notes:
        parts.append("<dl>")
        for term, text in s.notes:
            parts.append(f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>")
        parts.append("</dl>")
    for path, caption in s.figures:
        src = html.escape(path, quote=True)
        parts.append(
            f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(caption, quote=True)}"></a>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if s.links:
        parts.append('<ul class="links">')
        parts += [
            f'<li><a href="{html.escape(path, quote=True)}">{html.escape(label)}</a></li>'
            for path, label in s.links
        ]
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def render_report(title: str, subtitle: str, sections: Sequence[Section], footer: str = "") -> str:
    """The whole report as one HTML document (CSS embedded, no scripts, no network)."""
    body = "\n".join(_section_html(s) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>
<main>
{body}
<footer><p>{html.escape(footer)}</p></footer>
</main>
</body>
</html>
"""
