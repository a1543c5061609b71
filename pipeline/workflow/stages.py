"""The stages of one study, each a function over the study's output folder ``OUT`` (DESIGN.md output contract).

``ingest`` reads the study and writes ``series.json`` and ``volumes/``; every later stage reads only what earlier
stages wrote to ``OUT``, so each can be rerun on its own (the Snakemake rules call them one by one through the CLI).
Per-anatomy work lives in :mod:`pipeline.workflow.calf_stage` and :mod:`pipeline.workflow.spine_stage`; this module
only puts the stages in order, times them into ``provenance.json`` and returns exit codes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.core.errors import EXIT_OK, BadInputError
from pipeline.core.provenance import stage_timer

log = logging.getLogger(__name__)


def _require(out: Path, name: str, stage: str) -> None:
    if not (out / name).exists():
        raise BadInputError(f"{name} not found; this folder has not been through '{stage}' yet.", path=out,
                            fix=f"run 'legmri {stage}' (or 'legmri run') for this study first.")


def study_of(out: Path) -> Path | None:
    """The study folder recorded by ``ingest`` in ``OUT/series.json`` (None when unknown)."""
    p = out / "series.json"
    if not p.exists():
        return None
    study = json.loads(p.read_text(encoding="utf-8")).get("study")
    return Path(study) if study else None


def inspect(study: Path) -> int:
    """Print a table of the series of ``study`` with their role, plane, shape and spacing."""
    from pipeline.io.study import format_inspect_table, inspect_study

    print(format_inspect_table(inspect_study(Path(study))))
    return EXIT_OK


def ingest(study: Path, out: Path) -> int:
    """Discover, classify and convert every series of ``study`` into ``OUT/series.json`` and ``OUT/volumes/``."""
    from pipeline.io.study import ingest_study

    out = Path(out)
    with stage_timer(out, "ingest"):
        index = ingest_study(Path(study), out)
    log.info("ingested %s: %d series", study, len(index.get("series", [])))
    return EXIT_OK


def segment(out: Path, device: str = "cpu", models: Any = None) -> int:
    """Segment the calf (and lumbar spine, when present) from ``OUT/volumes``; ``models`` is a bundle cache so a
    batch loads each model once per process."""
    from pipeline.workflow import calf_stage, spine_stage

    out = Path(out)
    _require(out, "series.json", "ingest")
    with stage_timer(out, "segment") as facts:
        facts["calf"] = calf_stage.segment(out, device=device, models=models)
        facts["spine"] = spine_stage.segment(out, device=device, models=models)
    return EXIT_OK


def measure(out: Path) -> int:
    """Measure calf muscles and the lumbar canal; write the measurement tables and ``summary.json``."""
    from pipeline.workflow import calf_stage, spine_stage

    out = Path(out)
    _require(out, "series.json", "ingest")
    with stage_timer(out, "measure"):
        calf_stage.measure(out)
        spine_stage.measure(out)
    return EXIT_OK


def rules(out: Path, clinical: Path | None = None, rules_path: Path | None = None) -> int:
    """Evaluate the diagnostic rules over ``summary.json`` and the clinical findings; write ``findings.json``.

    The clinical file is ``clinical`` when given, else ``clinical.yaml`` of the study folder when it exists.
    """
    from pipeline.rules import evaluate_study

    out = Path(out)
    _require(out, "summary.json", "measure")
    if clinical is None:
        study = study_of(out)
        if study is not None and (study / "clinical.yaml").exists():
            clinical = study / "clinical.yaml"
    with stage_timer(out, "rules"):
        evaluate_study(out, clinical=clinical, rules_path=rules_path)
    return EXIT_OK


def report(out: Path, show_phi: bool = False) -> int:
    """Write QA overlays, ``report.html``, ``calf/seg.dcm`` and ``measurements_sr.dcm``."""
    from pipeline.workflow import report_stage

    out = Path(out)
    _require(out, "findings.json", "rules")
    with stage_timer(out, "report"):
        report_stage.report(out, show_phi=show_phi)
    return EXIT_OK


def run(study: Path, out: Path, clinical: Path | None = None, device: str = "cpu", show_phi: bool = False,
        models: Any = None) -> int:
    """All stages of one study in one process."""
    ingest(study, out)
    segment(out, device=device, models=models)
    measure(out)
    rules(out, clinical=clinical)
    report(out, show_phi=show_phi)
    print(f"{study}: done -> {Path(out) / 'report.html'}")
    return EXIT_OK
