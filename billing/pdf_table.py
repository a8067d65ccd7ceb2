"""A grid table for invoice PDFs, written as PDF operators in one go instead of one reportlab
call per cell.

reportlab's platypus ``Table`` draws each cell through the canvas (a text object, bidi
shaping and a width measure per string) and lays the whole table out again at every page
break: for a month of hundreds of jobs per tenant that was most of a PDF's rendering time.
:class:`GridTable` is a platypus flowable with the look of the grid the invoice had as a
platypus table (bold header on a tinted band, a rule under the header and under each row,
text at the top of its cell, numbers right-aligned, the header repeated on every page): row heights are known before layout, a page break is a bisection
over their running sums, and each page's part of the table is one ``BT ... ET`` text object
and one path of rules.

Text is shown in the standard Helvetica fonts as reportlab shows it (its encoding and glyph
substitution, :func:`show`), so what a reader extracts from the page is the same text.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase.pdfdoc import escapePDF
from reportlab.pdfbase.pdfmetrics import getFont, stringWidth, unicode2T1
from reportlab.platypus import Flowable

FONT = "Helvetica"
BOLD = "Helvetica-Bold"
SIZE = 8
LEADING = 10  # points between the baselines of a wrapped cell's lines
PAD_X = 6  # left and right padding of a cell (reportlab Table's defaults)
PAD_Y = 3  # top and bottom padding
HEADER_FILL = "0.909804 0.929412 0.952941 rg"  # #e8edf3
HEADER_RULE = "0.290196 0.352941 0.439216 RG 0.6 w"  # #4a5a70, under the header
ROW_RULE = "0.784314 0.815686 0.854902 RG 0.25 w"  # #c8d0da, under every other row

#: A cell: its lines, top to bottom (a cell that wraps has several).
Cell = tuple[str, ...]


@dataclass(frozen=True)
class Columns:
    """Widths (points) and which columns are right-aligned."""

    widths: tuple[float, ...]
    right_from: int  # columns from this index on are right-aligned

    @property
    def lefts(self) -> tuple[float, ...]:
        return tuple(accumulate(self.widths, initial=0.0))[:-1]

    def wrap(self, col: int, text: str) -> Cell:
        """``text`` broken into the lines that fit column ``col`` (a Paragraph's breaking)."""
        return wrapped(text, self.widths[col] - 2 * PAD_X)


@lru_cache(maxsize=8192)  # GPU models and classes repeat on every row
def wrapped(text: str, width: float) -> Cell:
    if stringWidth(text, FONT, SIZE) <= width:  # most cells: one line, no search for breaks
        return (text,)
    return tuple(simpleSplit(text, FONT, SIZE, width)) or ("",)


def show(text: str, font: str, canv: Any) -> str:
    """The PDF operators that show ``text`` at the current text position in ``font`` (the font
    of the text object), encoded the way reportlab encodes it."""
    if text.isascii() and text.isprintable():
        return _ascii(text)
    # Outside ASCII: reportlab's own split into the font's encoding and substitution fonts.
    base = getFont(font)
    ops, current = [], base
    for f, chunk in unicode2T1(text, [base, *base.substitutionFonts]):
        if f is not current:
            ops.append(f"{canv._doc.getInternalFontName(f.fontName)} {SIZE} Tf")
            current = f
        ops.append(f"({escapePDF(chunk)}) Tj")
    if current is not base:
        ops.append(f"{canv._doc.getInternalFontName(font)} {SIZE} Tf")
    return " ".join(ops)


@lru_cache(maxsize=65536)
def _ascii(text: str) -> str:
    return "({}) Tj".format(text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)"))


class GridTable(Flowable):  # type: ignore[misc]  # reportlab is untyped
    """``header`` then ``rows`` (lists of cells) in ``columns``; ``bold_last``: the last row in
    bold (a total). Splits between rows, the header repeated on every part."""

    def __init__(
        self,
        columns: Columns,
        header: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        *,
        bold_last: bool = False,
        _lines: Sequence[int] | None = None,
        _tops: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.hAlign = "CENTER"  # as platypus centres a Table (wider than the frame's padding)
        self.columns = columns
        self.header = [(h,) for h in header]
        self.rows = rows
        self.bold_last = bold_last
        self.header_h = LEADING + 2 * PAD_Y
        # lines of each row (its tallest cell), and running sums of row heights:
        # tops[i] = height of rows[:i]
        self.lines = _lines if _lines is not None else [max(map(len, r)) for r in rows]
        self.tops = (
            _tops
            if _tops is not None
            else list(accumulate((n * LEADING + 2 * PAD_Y for n in self.lines), initial=0.0))
        )

    @property
    def body_h(self) -> float:
        return self.tops[-1] - self.tops[0]

    def wrap(self, avail_width: float, avail_height: float) -> tuple[float, float]:
        self.width = sum(self.columns.widths)
        self.height = self.header_h + self.body_h
        return self.width, self.height

    def split(self, avail_width: float, avail_height: float) -> list[GridTable]:
        room = avail_height - self.header_h
        # rows that fit: the largest k with tops[k] - tops[0] <= room
        k = bisect_right(self.tops, self.tops[0] + room + 1e-6) - 1
        if k <= 0 or k >= len(self.rows):
            return [] if k <= 0 else [self]
        return [self._part(0, k, last=False), self._part(k, len(self.rows), last=True)]

    def _part(self, a: int, b: int, *, last: bool) -> GridTable:
        return GridTable(
            self.columns,
            [c[0] for c in self.header],
            self.rows[a:b],
            bold_last=self.bold_last and last,
            _lines=self.lines[a:b],
            _tops=self.tops[a : b + 1],
        )

    def draw(self) -> None:
        canv = self.canv
        internal = {f: canv._doc.getInternalFontName(f) for f in (FONT, BOLD)}
        widths = self.columns.widths
        right_from = self.columns.right_from
        lefts = [f"{x + PAD_X:.2f}" for x in self.columns.lefts]
        rights = [x + w - PAD_X for x, w in zip(self.columns.lefts, widths, strict=True)]
        total_w = f"{sum(widths):.2f}"
        text: list[str] = ["BT 0 g"]
        rules: list[str] = []
        y = self.height  # top of the current row, from the table's bottom
        last = len(self.rows)
        font = ""
        for i, (row, count) in enumerate(
            zip([self.header, *self.rows], [1, *self.lines], strict=True)
        ):
            want = BOLD if i == 0 or (self.bold_last and i == last) else FONT
            if want != font:
                font = want
                text.append(f"{internal[font]} {SIZE} Tf")
            first = y - PAD_Y - SIZE  # the first line's baseline
            # line by line across the row, so that a reader extracts each line of a row whole
            for n in range(count):
                yn = f"{first - n * LEADING:.2f}"
                for col, cell in enumerate(row):
                    if n < len(cell) and (line := cell[n]):
                        x = _right_x(line, font, rights[col]) if col >= right_from else lefts[col]
                        text.append(f"1 0 0 1 {x} {yn} Tm {show(line, font, canv)}")
            y -= self.header_h if i == 0 else self.tops[i] - self.tops[i - 1]
            rules.append(f"0 {y:.2f} m {total_w} {y:.2f} l")
        text.append("ET")
        band = f"0 {self.height - self.header_h:.2f} {total_w} {self.header_h:.2f} re f"
        canv.addLiteral(
            "\n".join(
                [
                    "q",
                    f"q {HEADER_FILL} {band} Q",
                    f"{HEADER_RULE} {rules[0]} S",
                    f"{ROW_RULE} {' '.join(rules[1:])} S" if len(rules) > 1 else "",
                    *text,
                    "Q",
                ]
            )
        )


@lru_cache(maxsize=65536)
def _right_x(text: str, font: str, right: float) -> str:
    """Where right-aligned ``text`` starts so that it ends at ``right``."""
    return f"{right - stringWidth(text, font, SIZE):.2f}"
