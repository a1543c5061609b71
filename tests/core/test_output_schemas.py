"""The JSON Schemas of summary.json and findings.json are valid schemas, a sample run's files follow them, and they
refuse what a reader could not rely on."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from pipeline.core.output_schemas import OUTPUTS, check_output, output_errors, schema
from pipeline.core.summary import Summary
from pipeline.rules import evaluate_summary

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference_outputs"


@pytest.mark.parametrize("kind", OUTPUTS)
def test_the_schemas_are_valid_json_schemas(kind: str):
    Draft202012Validator.check_schema(schema(kind))


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    summary = json.loads((REFERENCE / "nmh_case" / "summary.json").read_text())
    findings = evaluate_summary(Summary.from_dict(summary), clinical=SAMPLE / "nmh_case" / "clinical.yaml")
    return {"summary": summary, "findings": json.loads(json.dumps(findings))}


def test_the_sample_case_follows_both_schemas(records):
    assert output_errors("summary", records["summary"]) == []
    assert output_errors("findings", records["findings"]) == []
    assert records["findings"]["decision"]["hypothesis"] == "neurogenic_hypertrophy"


@pytest.mark.parametrize("kind, edit, where", [
    ("summary", lambda r: r["values"].update({"calf.right.soleus.volume_ml": {"value": 1}}), "calf.right.soleus"),
    ("summary", lambda r: r["missing"].update({"calf.right.soleus.ff_pct": ""}), "missing"),
    ("summary", lambda r: r["values"].update({"soleus volume": 1.0}), "values"),
    ("summary", lambda r: r.update({"schema_version": 2}), "schema_version"),
    ("findings", lambda r: r["quality_control"].update({"calf_status": "ok"}), "calf_status"),
    ("findings", lambda r: r["decision"].pop("statement"), "statement"),
    ("findings", lambda r: r["inputs"].update({"rules_sha256": "abc"}), "rules_sha256"),
    ("findings", lambda r: r.update({"extra": 1}), "extra"),
])
def test_a_record_a_reader_could_not_rely_on_is_refused(records, kind, edit, where):
    broken = copy.deepcopy(records[kind])
    edit(broken)
    errors = output_errors(kind, broken)
    assert errors and any(where in e for e in errors), errors
    with pytest.raises(ValueError, match="would not follow its schema"):
        check_output(kind, broken)
