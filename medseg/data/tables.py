"""A data set's clinical table (LGG's data.csv) read with pandas, as spreadsheets and scripts save it.

Real copies vary: a byte-order mark before the first header (Excel's "CSV UTF-8"), ``;`` or tab separators (a
spreadsheet in a locale whose decimal mark is a comma), quoted fields, headers with stray spaces or another case,
rows with more or fewer fields than the header. Each is read as the header means it; nothing is refused.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pandas as pd

SEPARATORS = ",;\t"


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """The separator and quoting of a table, guessed from its start (plain commas when it cannot tell)."""
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=SEPARATORS)
    except csv.Error:
        return csv.excel


def read_rows(path: Path) -> list[dict[str, str | None]]:
    """The rows of a table as ``{header: text}``: headers stripped, empty headers dropped, a missing field None,
    fields past the last header dropped."""
    # utf-8-sig: a spreadsheet-saved CSV starts with a byte-order mark that would otherwise hide the first header
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    if not text.strip():
        return []
    dialect = _dialect(text)
    lines = text.splitlines()
    header = next(csv.reader(lines[:1], dialect=dialect))
    width = len(header)
    table = pd.read_csv(
        io.StringIO("\n".join(lines[1:])),
        sep=dialect.delimiter,
        quotechar=dialect.quotechar or '"',
        header=None,
        names=range(width),
        dtype=str,
        keep_default_na=False,  # "NA" in a table is the text NA, as csv reads it, not a missing value
        skip_blank_lines=True,
        engine="python",
        on_bad_lines=lambda fields: fields[:width],
    )
    names = [h.strip() for h in header]
    return [
        {name: _text(value) for name, value in zip(names, row) if name}
        for row in table.itertuples(index=False, name=None)
    ]


def _text(value) -> str | None:
    """A field as text; pandas' NaN (a row shorter than the header) as None."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
