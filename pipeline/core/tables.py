"""Tidy tables as CSV text: one header, one row per record, empty cells for None."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with the given ``columns`` (other keys are left out, None becomes an empty cell).

    >>> print(csv_text([{"side": "left", "value": 1.5, "unit": None, "extra": 0}], ["side", "value", "unit"]), end="")
    side,value,unit
    left,1.5,
    """
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()
