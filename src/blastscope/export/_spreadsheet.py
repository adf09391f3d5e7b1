"""Text in CSV files that a spreadsheet would run as a formula, escaped (CSV injection).

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to Excel
and LibreOffice; file and folder names (slide ids) and model class names are text a user
controls. As OWASP recommends, such text is written with a single quote in front. Text that
already starts with a quote gets one more, so :func:`unescape_cell` restores every value exactly.
Only text columns are escaped: numbers such as ``-0.5`` stay numbers.
"""

from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
ESCAPE_NAME = "leading-quote"
"""How the cells-table sidecar names this escaping (its ``text_escape`` entry)."""


def escape_cell(value: object) -> object:
    """``value`` with a quote in front when it is text a spreadsheet would treat as a formula."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, QUOTE)):
        return QUOTE + value
    return value


def unescape_cell(value: str) -> str:
    """The text :func:`escape_cell` was given (drops one leading quote)."""
    return value[1:] if value.startswith(QUOTE) else value


def escape_text_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose column names and text columns (object or string dtype) are
    escaped cell by cell."""
    escaped = table.copy()
    for name in escaped.columns:
        column = escaped[name]
        if column.dtype == object or isinstance(column.dtype, pd.StringDtype):
            escaped[name] = column.astype(object).map(escape_cell)
    escaped.columns = [escape_cell(name) for name in escaped.columns]
    return escaped
