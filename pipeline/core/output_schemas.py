"""JSON Schemas of the study outputs that other programs read (``summary.json``, ``findings.json``), shipped in
``pipeline/core/schemas/`` and checked whenever legmri writes one of them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).with_name("schemas")
OUTPUTS = ("summary", "findings")


@cache
def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of output ``kind`` (``summary`` or ``findings``)."""
    if kind not in OUTPUTS:
        raise ValueError(f"no schema for '{kind}' (have {', '.join(OUTPUTS)})")
    return json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text(encoding="utf-8"))


def output_errors(kind: str, record: Any) -> list[str]:
    """Every violation of ``kind``'s schema in ``record`` (a JSON-like object), as 'path: message' lines."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema(kind))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(record), key=lambda e: list(map(str, e.absolute_path)))]


def check_output(kind: str, record: Any) -> None:
    """Raise ``ValueError`` when ``record`` does not follow ``kind``'s schema: legmri writing a file its readers
    cannot rely on is a bug, and is reported as one."""
    errors = output_errors(kind, json.loads(json.dumps(record, default=str)))
    if errors:
        raise ValueError(f"{kind}.json would not follow its schema: " + "; ".join(errors[:5]))
