"""One table, two looks: aligned plain text for terminals, an HTML table for notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def text_table(
    header: tuple[str, ...], rows: Sequence[tuple[str, ...]], left: int = 1
) -> list[str]:
    """Aligned columns; the first ``left`` columns flush left, the rest (numbers) flush right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for cells in (header, *rows):
        lines.append(
            "  ".join(
                cell.ljust(width) if index < left else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def html_table(
    header: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    raw_last: bool = False,
    nowrap: bool = False,
) -> str:
    """An HTML table; with ``raw_last`` the last cell of each row is trusted HTML (a bar); with
    ``nowrap`` no cell breaks its line (notebooks style table cells, so it is set on each)."""
    td = '<td style="white-space:nowrap">' if nowrap else "<td>"
    head = "".join(f"<th>{escape(title)}</th>" for title in header)
    body = []
    for row in rows:
        cells = [escape(cell) for cell in row]
        if raw_last:
            cells[-1] = row[-1]
        body.append("<tr>" + "".join(f"{td}{cell}</td>" for cell in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_list(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>" if lines else ""
