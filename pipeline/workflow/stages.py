"""The stages of one study in order, each over the study's output folder (DESIGN.md output contract).

``ingest`` reads the study and writes ``series.json`` and ``volumes/``; every later stage reads only what earlier
stages wrote, so each can be rerun on its own (the Snakemake rules call them one by one through the CLI). The
per-anatomy work lives in the drivers :mod:`pipeline.workflow.calf`, :mod:`pipeline.workflow.spine` and
:mod:`pipeline.workflow.report`; this module puts the stages in order, times them and records the resolved
configuration into ``provenance.json``, holds the process-wide bundle cache and returns exit codes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_json
from pipeline.core.config import resolved_config_record
from pipeline.core.errors import EXIT_OK
from pipeline.core.layout import StudyDir
from pipeline.core.provenance import stage_timer, update_provenance
from pipeline.core.summary import Summary

log = logging.getLogger(__name__)
_BUNDLES: Any = None  # the process-wide bundle cache, made on first use (it loads the network libraries)

#: the configuration files each stage reads; their resolved content and hash go into provenance.json
STAGE_CONFIGS = {"ingest": ("default", "series_roles"), "segment": ("default", "labels"),
                 "measure": ("default", "labels", "innervation", "qc"), "rules": ("rules", "innervation"),
                 "report": ("default", "report", "labels")}


def bundle_cache() -> Any:
    """The bundle cache of this process (:class:`pipeline.segment.bundle.BundleCache`): each model loads once."""
    global _BUNDLES
    if _BUNDLES is None:
        from pipeline.segment.bundle import BundleCache

        _BUNDLES = BundleCache()
    return _BUNDLES


def record_configs(study: StudyDir, stage: str) -> None:
    """Record the resolved configuration the stage reads, with its hash, under ``configs`` in provenance.json."""
    update_provenance(study.root, configs=resolved_config_record(STAGE_CONFIGS[stage]))


def study_of(out: Path) -> Path | None:
    """The study folder recorded by ``ingest`` in ``OUT/series.json`` (None when unknown)."""
    return StudyDir(out).series().study


def inspect(study: Path) -> int:
    """Print a table of the series of ``study`` with their role, plane, shape and spacing."""
    from pipeline.io.study import format_inspect_table, inspect_study

    print(format_inspect_table(inspect_study(Path(study))))
    return EXIT_OK


def ingest(study: Path, out: Path) -> int:
    """Discover, classify and convert every series of ``study`` into ``OUT/series.json`` and ``OUT/volumes/``; a
    scanner fat-fraction map is stored in percent (:func:`pipeline.io.ffscale.store_ff_map_in_percent`)."""
    from pipeline.io.ffscale import store_ff_map_in_percent
    from pipeline.io.study import ingest_study

    folder = StudyDir(out)
    with stage_timer(folder.root, "ingest"):
        index = ingest_study(Path(study), folder.root)
        note = store_ff_map_in_percent(folder.series().volume("calf_ffmap"))
        if note:
            update_provenance(folder.root, notes=[note])
    record_configs(folder, "ingest")
    log.info("ingested %s: %d series", study, len(index.get("series", [])))
    return EXIT_OK


def segment(out: Path, device: str = "cpu", models: Any = None) -> int:
    """Segment the calf (and lumbar spine, when present) from ``OUT/volumes``; ``models`` is a bundle cache (by
    default the process-wide one, so a batch loads each model once per process)."""
    from pipeline.workflow import calf, spine

    folder = StudyDir(out)
    folder.require(folder.series_json, "ingest")
    models = models if models is not None else bundle_cache()
    with stage_timer(folder.root, "segment") as facts:
        facts["calf"] = calf.segment(folder, models, device=device)
        facts["spine"] = spine.segment(folder, models, device=device)
    record_configs(folder, "segment")
    return EXIT_OK


def measure(out: Path) -> int:
    """Measure calf muscles and the lumbar canal; write the measurement tables and ``summary.json``."""
    from pipeline.workflow import calf, spine

    folder = StudyDir(out)
    folder.require(folder.series_json, "ingest")
    with stage_timer(folder.root, "measure"):
        calf.measure(folder)
        spine.measure(folder)
    record_configs(folder, "measure")
    return EXIT_OK


def rules(out: Path, clinical: Path | None = None, rules_path: Path | None = None) -> int:
    """Evaluate the diagnostic rules over ``summary.json`` and the clinical findings; write ``findings.json``.

    The clinical file is ``clinical`` when given, else ``clinical.yaml`` of the study folder when it exists.
    """
    from pipeline.rules import evaluate_summary

    folder = StudyDir(out)
    folder.require(folder.summary, "measure")
    if clinical is None:
        study = folder.series().study
        if study is not None and (study / "clinical.yaml").exists():
            clinical = study / "clinical.yaml"
    with stage_timer(folder.root, "rules"):
        write_json(folder.findings, evaluate_summary(Summary.load(folder.summary), clinical=clinical,
                                                     rules_path=rules_path))
    record_configs(folder, "rules")
    return EXIT_OK


def report(out: Path, show_phi: bool = False) -> int:
    """Write QA overlays, ``report.html``, ``calf/seg.dcm`` and ``measurements_sr.dcm``."""
    from pipeline.workflow import report as report_driver

    folder = StudyDir(out)
    folder.require(folder.findings, "rules")
    record_configs(folder, "report")
    with stage_timer(folder.root, "report"):
        report_driver.report(folder, show_phi=show_phi)
    return EXIT_OK


def run(study: Path, out: Path, clinical: Path | None = None, device: str = "cpu", show_phi: bool = False,
        models: Any = None) -> int:
    """All stages of one study in one process."""
    ingest(study, out)
    segment(out, device=device, models=models)
    measure(out)
    rules(out, clinical=clinical)
    report(out, show_phi=show_phi)
    print(f"{study}: done -> {StudyDir(out).report_html}")
    return EXIT_OK
