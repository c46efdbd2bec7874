"""``report.html`` from ``report.md``: one self-contained page a browser renders.

The markdown reports are the source (they read well on GitHub and in a terminal); the page is made from
them with markdown-it-py (CommonMark plus GFM tables, the parser rich uses), with every local image
embedded as a base64 data URI so the file can be mailed or attached without its folder.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path

from markdown_it import MarkdownIt

from splatdistill.atomic import atomic_write_text

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.8em 0 1.4em}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}
img{max-width:100%}code{background:#f4f4f4;padding:0 3px}h1,h2{border-bottom:1px solid #ddd}
"""


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _inline_images(tokens, base: Path) -> None:
    """Replace local image sources by data URIs (remote or missing ones are left as they are)."""
    for token in tokens:
        for child in token.children or []:
            if child.type != "image":
                continue
            src = str(child.attrGet("src") or "")
            if not src or "://" in src or src.startswith("data:"):
                continue
            path = (base / src).resolve()
            if path.is_file():
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                child.attrSet("src", f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}")


def markdown_to_html_body(text: str, base: Path) -> str:
    """The HTML of one markdown document, images relative to ``base`` embedded."""
    md = _parser()
    tokens = md.parse(text)
    _inline_images(tokens, base)
    return md.renderer.render(tokens, md.options, {})


def write_html_report(path: str | Path, title: str, sections: list[tuple[str, Path]]) -> Path:
    """``path``: a page made of markdown ``sections`` (text, the folder its image links are relative to)."""
    body = "\n<hr>\n".join(markdown_to_html_body(text, base) for text, base in sections)
    page = (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    return atomic_write_text(path, page)
