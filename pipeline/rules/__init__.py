"""Diagnostic rules: YAML rules over the imaging summary and the clinical findings, with the evidence.

The stage lives in :mod:`pipeline.rules.findings`; :mod:`pipeline.rules.derive` derives the rule inputs,
:mod:`pipeline.rules.engine` fires the rules, :mod:`pipeline.rules.clinical` reads the clinical file.
"""

from pipeline.rules.clinical import load_clinical
from pipeline.rules.engine import load_rules
from pipeline.rules.findings import CAVEAT, evaluate_summary, findings

__all__ = ["CAVEAT", "evaluate_summary", "findings", "load_clinical", "load_rules"]
