"""Rule loading, validation and evaluation.

Rules live in ``configs/rules.yaml``: hypotheses, thresholds (with units), rules and the decision policy. Each rule
has an id, a description, a condition in the rule-engine expression language (a safe, typed expression grammar:
no Python evaluation), the symbols it needs, points per hypothesis and a literature reference. Conditions are compiled
at load against the typed symbols of :data:`pipeline.rules.derive.SYMBOLS` plus the thresholds, so a syntax error,
an unknown symbol or an unknown hypothesis fails at load with the rule id in the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rule_engine

from pipeline.core.config import config_dir, load_config
from pipeline.core.errors import ConfigError
from pipeline.rules.derive import SYMBOLS, Derived


@dataclass
class Rule:
    id: str
    description: str
    condition: str
    compiled: rule_engine.Rule
    requires: list[str]
    points: dict[str, float]
    reference: str


@dataclass
class RuleSet:
    path: Path
    hypotheses: dict[str, dict[str, Any]]
    thresholds: dict[str, float]
    rules: list[Rule]
    decision: dict[str, float]
    raw: dict[str, Any]


def _context(thresholds: dict[str, float]) -> rule_engine.Context:
    types = {name: t for name, (t, _) in SYMBOLS.items()}
    types.update({f"thr_{k}": rule_engine.DataType.FLOAT for k in thresholds})
    return rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(types))


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load and validate a rules file (default: configs/rules.yaml)."""
    path = Path(path) if path is not None else config_dir() / "rules.yaml"
    raw = load_config("rules", path)
    thresholds = {k: float(v["value"]) for k, v in raw["thresholds"].items()}
    ctx = _context(thresholds)
    hyps = raw["hypotheses"]
    rules = []
    seen: set[str] = set()
    for r in raw["rules"]:
        rid = r["id"]
        if rid in seen:
            raise ConfigError(f"rule '{rid}' is defined twice.", path=path, fix="give every rule a unique id.")
        seen.add(rid)
        unknown_h = sorted(set(r["points"]) - set(hyps))
        if unknown_h:
            raise ConfigError(f"rule '{rid}' gives points to unknown hypothesis {unknown_h}.", path=path,
                              fix=f"use one of: {', '.join(hyps)}.")
        try:
            compiled = rule_engine.Rule(r["when"], context=ctx)
        except rule_engine.errors.SymbolResolutionError as exc:
            raise ConfigError(f"rule '{rid}': unknown field '{exc.symbol_name}' in condition {r['when']!r}.",
                              path=path, fix="use a symbol listed in pipeline/rules/derive.py SYMBOLS or a "
                                             "threshold as thr_<name>.") from exc
        except rule_engine.errors.EngineError as exc:
            raise ConfigError(f"rule '{rid}': invalid condition {r['when']!r} ({type(exc).__name__}: "
                              f"{getattr(exc, 'message', exc)}).", path=path,
                              fix="correct the expression (rule-engine syntax).") from exc
        requires = list(r["requires"]) if "requires" in r else _names_in(r["when"])
        bad = [s for s in requires if s not in SYMBOLS]
        if bad:
            raise ConfigError(f"rule '{rid}' requires unknown field(s) {bad}.", path=path,
                              fix="list only symbols used by the condition.")
        rules.append(Rule(rid, r["description"], r["when"], compiled, requires,
                          {k: float(v) for k, v in r["points"].items()}, r["reference"]))
    return RuleSet(path, hyps, thresholds, rules, raw["decision"], raw)


def evaluate(ruleset: RuleSet, derived: Derived) -> dict[str, Any]:
    """Fire the rules; score the hypotheses; decide by the policy (winner by margin, else indeterminate).

    A hypothesis's score is the sum of the points of its fired rules, 0 when its rules were evaluated and none fired,
    and None when none of the rules that give it points could be evaluated (their inputs missing): an unscored
    hypothesis is not one that scored nothing. Scores are ranked highest first, the unscored last."""
    env = dict(derived.values)
    env.update({f"thr_{k}": v for k, v in ruleset.thresholds.items()})
    totals = {h: 0.0 for h in ruleset.hypotheses}
    evaluated: set[str] = set()  # hypotheses with at least one rule that could be evaluated
    fired, not_fired, not_evaluable = [], [], []
    for rule in ruleset.rules:
        missing = [s for s in rule.requires if env.get(s) is None]
        if missing:
            not_evaluable.append({"id": rule.id, "missing": {s: derived.missing.get(s, "not available")
                                                             for s in missing}})
            continue
        try:
            ok = bool(rule.compiled.matches(env))
        except rule_engine.errors.EvaluationError as exc:
            not_evaluable.append({"id": rule.id, "missing": {"error": str(exc)}})
            continue
        evaluated.update(rule.points)
        entry = {"id": rule.id, "description": rule.description, "condition": rule.condition,
                 "values": {s: _jsonable(env.get(s)) for s in _symbols_of(rule)}, "points": rule.points,
                 "reference": rule.reference}
        if ok:
            fired.append(entry)
            for h, p in rule.points.items():
                totals[h] += p
        else:
            not_fired.append({"id": rule.id, "values": entry["values"]})
    scores = {h: totals[h] if h in evaluated else None for h in ruleset.hypotheses}
    ranked = sorted(scores.items(), key=lambda kv: (kv[1] is not None, kv[1] or 0.0), reverse=True)
    (top, s1), (second, s2) = ((h, v or 0.0) for h, v in ranked[:2])
    pol = ruleset.decision
    if not fired and not not_fired:
        decision = {"hypothesis": None, "status": "not evaluable",
                    "reason": f"none of the {len(not_evaluable)} rules could be evaluated: their inputs are missing "
                              "(not_evaluable_rules says which and why)"}
    elif s1 < pol["min_score"]:
        decision = {"hypothesis": None, "status": "no hypothesis above threshold",
                    "reason": f"highest score {s1:g} ({top}) < {pol['min_score']:g}"}
    elif s1 - s2 < pol["min_margin"]:
        decision = {"hypothesis": None, "status": "indeterminate",
                    "reason": f"{top} {s1:g} vs {second} {s2:g}: margin < {pol['min_margin']:g}"}
    else:
        decision = {"hypothesis": top, "status": "decided", "title": ruleset.hypotheses[top]["title"],
                    "reason": f"{top} {s1:g}, next {second} {s2:g} (margin >= {pol['min_margin']:g})"}
    return {"scores": dict(ranked), "decision": decision, "fired_rules": fired, "not_fired_rules": not_fired,
            "not_evaluable_rules": not_evaluable}


def _names_in(condition: str) -> list[str]:
    """The rule symbols named in a condition (whole words): a rule's ``requires`` when the file gives none."""
    return sorted(s for s in SYMBOLS if re.search(rf"\b{s}\b", condition))


def _symbols_of(rule: Rule) -> list[str]:
    """Symbols named in the rule's condition or listed in ``requires``."""
    return sorted(set(_names_in(rule.condition)) | set(rule.requires) | set(re.findall(r"\bthr_\w+", rule.condition)))


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
