"""``summary.json``: the flat, typed record the rules read.

Layout::

    {
      "schema_version": 1,
      "values":  {"calf.right.gastrocnemius_medial.ff_pct": 78.2, "spine.L4-L5.dsca_mm2": null, ...},
      "missing": {"spine.L4-L5.dsca_mm2": "no axial T2 series through the L4-L5 disc", ...}
    }

Keys are dotted paths ``<section>.<...>.<metric>_<unit>``; values are numbers, strings, booleans or null. Every null
value has its reason in ``missing``: a value that cannot be measured is null with a reason, never 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_json
from pipeline.core.errors import InternalError
from pipeline.core.layout import StudyDir

SUMMARY_VERSION = 1
Scalar = float | int | str | bool | None


class Summary:
    """A mutable summary: flat values plus the reason for each null."""

    def __init__(self, values: Mapping[str, Scalar] | None = None, missing: Mapping[str, str] | None = None):
        self.values: dict[str, Scalar] = {}
        self.missing: dict[str, str] = {}
        for k, v in (values or {}).items():
            self.set(k, v, (missing or {}).get(k))

    def set(self, key: str, value: Any, reason: str | None = None) -> None:
        """Set ``key``; a null (None or non-finite float) needs a ``reason``."""
        if hasattr(value, "item") and callable(value.item):  # numpy scalar
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if value is not None and not isinstance(value, (int, float, str, bool)):
            raise InternalError(f"summary value for '{key}' must be a scalar, got {type(value).__name__}.")
        if value is None:
            if not reason:
                raise InternalError(f"summary value '{key}' is null without a reason.")
            self.missing[key] = reason
        else:
            self.missing.pop(key, None)
        self.values[key] = value

    def set_null(self, key: str, reason: str) -> None:
        self.set(key, None, reason)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def section(self, prefix: str) -> dict[str, Scalar]:
        """All values whose key starts with ``prefix + '.'``."""
        p = prefix + "."
        return {k: v for k, v in self.values.items() if k.startswith(p)}

    def drop_section(self, prefix: str) -> None:
        p = prefix + "."
        for k in [k for k in self.values if k.startswith(p)]:
            self.values.pop(k)
            self.missing.pop(k, None)

    def update(self, other: Summary) -> None:
        for k, v in other.values.items():
            self.set(k, v, other.missing.get(k))

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SUMMARY_VERSION, "values": dict(self.values), "missing": dict(self.missing)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        return cls(data.get("values", {}), data.get("missing", {}))

    @classmethod
    def load(cls, path: str | Path) -> Summary:
        p = Path(path)
        if not p.exists():
            return cls()
        return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))

    def save(self, path: str | Path) -> Path:
        """Write the summary atomically, after checking it against ``summary.schema.json``."""
        from pipeline.core.output_schemas import check_output

        record = self.to_dict()
        check_output("summary", record)
        return write_json(path, record)


def update_summary_section(out_dir: str | Path, section: str, part: Summary) -> Summary:
    """Replace section ``section`` of ``OUT/summary.json`` with ``part`` (atomic read-modify-write)."""
    path = StudyDir(out_dir).summary
    summary = Summary.load(path)
    summary.drop_section(section)
    for k in part.values:
        if not k.startswith(section + "."):
            raise InternalError(f"summary key '{k}' is outside section '{section}'.")
    summary.update(part)
    summary.save(path)
    return summary
