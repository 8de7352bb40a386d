"""Markdown tables: the one table writer of the run report and `pfdx compare`."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import tabulate

# Cells as given, unpadded: a row reads `| a | b |` whatever its neighbours' widths,
# so a table's lines can be searched for and diffed one by one.
_MARKDOWN = tabulate.TableFormat(
    lineabove=None, linebelowheader=lambda widths, _aligns: "|" + " --- |" * len(widths),
    linebetweenrows=None, linebelow=None, headerrow=tabulate.DataRow("|", "|", "|"),
    datarow=tabulate.DataRow("|", "|", "|"), padding=1, with_header_hide=None)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of text cells (format numbers with `number` first)."""
    return tabulate.tabulate([list(r) for r in rows], headers=list(header), tablefmt=_MARKDOWN,
                             disable_numparse=True, stralign=None, numalign=None)


def number(x: float | None, digits: int = 4) -> str:
    """`x` to `digits` decimals; "-" for a value that is missing (None, NaN)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
