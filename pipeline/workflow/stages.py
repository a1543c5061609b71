"""The stages of one study in order, each over the study's output folder (DESIGN.md output contract).

``ingest`` reads the study and writes ``series.json`` and ``volumes/``; every later stage reads only what earlier
stages wrote, so each can be rerun on its own (the Snakemake rules call them one by one through the CLI). The
per-anatomy work lives in the drivers :mod:`pipeline.workflow.calf`, :mod:`pipeline.workflow.spine` and
:mod:`pipeline.workflow.report`; this module puts the stages in order, times them and records the resolved
configuration into ``provenance.json``, holds the process-wide bundle cache and returns exit codes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.core import interrupt
from pipeline.core.atomic import folder_lock, write_json
from pipeline.core.config import load_config, resolved_config_record
from pipeline.core.errors import EXIT_OK, BadInputError
from pipeline.core.layout import StudyDir
from pipeline.core.output_schemas import check_output
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


def inspect(study: Path, as_json: bool = False) -> int:
    """Print the series of ``study`` with their role, plane, shape and spacing: a table, or with ``as_json`` one
    JSON list of objects."""
    import json

    from pipeline.io.study import format_inspect_table, inspect_study

    rows = inspect_study(Path(study))
    print(json.dumps(rows, indent=1, default=str) if as_json else format_inspect_table(rows))
    return EXIT_OK


def ingest(study: Path, out: Path, show_phi: bool = False) -> int:
    """Discover, classify and convert every series of ``study`` into ``OUT/series.json`` and ``OUT/volumes/``; a
    scanner fat-fraction map is stored in percent (:func:`pipeline.io.ffscale.store_ff_map_in_percent`); patient
    names, IDs and dates are kept in ``series.json`` only with ``show_phi``."""
    from pipeline.io.ffscale import store_ff_map_in_percent
    from pipeline.io.study import ingest_study

    check_study_and_out(Path(study), Path(out))
    folder = StudyDir(out)
    with stage_timer(folder.root, "ingest"):
        index = ingest_study(Path(study), folder.root, show_phi=show_phi)
        note = store_ff_map_in_percent(folder.series().volume("calf_ffmap"))
        if note:
            update_provenance(folder.root, notes=[note])
    record_configs(folder, "ingest")
    log.info("ingested %s: %d series", study, len(index.get("series", [])))
    return EXIT_OK


def segment(out: Path, device: str = "cpu", models: Any = None, anchor_level: str | None = None) -> int:
    """Segment the calf (and lumbar spine, when present) from ``OUT/volumes``; ``models`` is a bundle cache (by
    default the process-wide one, so a batch loads each model once per process). ``segment.json`` records what was
    done per anatomy and the label and probability maps now in ``calf/`` and ``spine/`` (the stage's declared output
    in the Snakemake workflow). ``anchor_level`` names the lumbar levels from one vertebra
    (:meth:`pipeline.spine.levels.Anchor.parse`); default: ``spine_anchor_level`` of the study's study.yaml."""
    from pipeline.workflow import calf, spine

    folder = StudyDir(out)
    folder.require(folder.series_json, "ingest")
    models = models if models is not None else bundle_cache()
    with stage_timer(folder.root, "segment") as facts:
        facts["calf"] = calf.segment(folder, models, device=device)
        facts["spine"] = spine.segment(folder, models, device=device, anchor_level=anchor_level)
    record_configs(folder, "segment")
    label_maps = sorted(folder.relative(p) for d in (folder.calf_dir, folder.spine_dir) if d.is_dir()
                        for p in d.glob("*.nii.gz"))
    write_json(folder.segment_record, {"calf": facts["calf"], "spine": facts["spine"], "files": label_maps})
    log.info("segmented %s: calf %s; spine %s; wrote %s", folder.root, facts["calf"].get("status"),
             facts["spine"].get("status"), ", ".join(label_maps) or "no label map")
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
    values = folder.summary_values()
    log.info("measured %s: %d values (%d null), calf QC %s, spine QC %s", folder.root, len(values),
             sum(v is None for v in values.values()), values.get("calf.qc_status"), values.get("spine.qc_status"))
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
        findings = evaluate_summary(Summary.load(folder.summary), clinical=clinical, rules_path=rules_path)
        check_output("findings", findings)
        write_json(folder.findings, findings)
    record_configs(folder, "rules")
    log.info("rules %s: %d fired, decision: %s", folder.root, len(findings.get("fired_rules", [])),
             findings.get("decision", {}).get("statement") or findings.get("decision", {}).get("status"))
    return EXIT_OK


def report(out: Path, show_phi: bool = False, deidentify: bool = False) -> int:
    """Write QA overlays, ``report.html``, ``calf/seg.dcm`` and ``measurements_sr.dcm`` (the last two de-identified
    with ``deidentify``)."""
    from pipeline.workflow import report as report_driver

    folder = StudyDir(out)
    folder.require(folder.findings, "rules")
    record_configs(folder, "report")
    with stage_timer(folder.root, "report"):
        written = report_driver.report(folder, show_phi=show_phi, deidentify=deidentify)
    log.info("report %s: %s", folder.root, written)
    return EXIT_OK


def check_configs() -> None:
    """Read and validate every configuration file a run uses (:data:`STAGE_CONFIGS`), so that an error in one
    stops the run before any image work rather than after segmentation."""
    for name in sorted({n for names in STAGE_CONFIGS.values() for n in names}):
        load_config(name)


def check_study_and_out(study: Path, out: Path) -> None:
    """Refuse, before anything is read or written, a study that is not a folder, and an output folder that is a
    file, lies inside the study (a rerun would read its own outputs as series) or cannot be written."""
    if not study.is_dir():
        raise BadInputError("the study is not a folder." if study.exists() else "the study folder does not exist.",
                            path=study, fix="give the folder that holds the study's DICOM files or study.yaml.")
    if out.exists() and not out.is_dir():
        raise BadInputError("--out is a file, not a folder.", path=out, fix="give a new or existing output folder.")
    if out.resolve().is_relative_to(study.resolve()):
        raise BadInputError("--out lies inside the study folder; a study's own files are its input.", path=out,
                            fix="write the outputs outside the study folder (e.g. out/<study name>).")
    existing = next(p for p in (out.resolve(), *out.resolve().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write to the output folder ({existing} is not a writable folder).", path=out,
                            fix="choose a folder you can write to.")


def claim_out(out: Path) -> None:
    """Refuse an ``--out`` that holds files legmri did not write: a run owns its output folder and removes what an
    earlier run left there (:func:`remove_stale`), so it must not be pointed at a folder of other files."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    folder = StudyDir(out)
    if not (folder.series_json.exists() or folder.provenance.exists()):
        raise BadInputError("--out holds files that legmri did not write.", path=out,
                            fix="give a new or empty folder, or the output folder of an earlier run of this study.")


def remove_stale(out: Path, since_ns: int) -> list[str]:
    """Delete the files under ``out`` last written before ``since_ns`` (the start of this run): what an earlier run
    wrote and this one did not (every stage rewrites its outputs atomically, so they are newer). Returns their paths
    relative to ``out``; empty folders left behind are removed too."""
    stale = [p for p in out.rglob("*") if p.is_file() and p.stat().st_mtime_ns < since_ns]
    for p in stale:
        p.unlink()
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    return sorted(str(p.relative_to(out)) for p in stale)


def run(study: Path, out: Path, clinical: Path | None = None, device: str = "cpu", show_phi: bool = False,
        models: Any = None, deidentify: bool = False, anchor_level: str | None = None) -> int:
    """All stages of one study in one process. The clinical findings and the configuration files are read and
    checked first, so that an error in them stops the run before any image work. The output folder then holds this
    run's files only: those an earlier run wrote and this one did not are removed (and listed in provenance). A
    second run into the same folder waits until this one has ended (:func:`~pipeline.core.atomic.folder_lock`)."""
    import time

    from pipeline.rules.clinical import load_clinical

    clinical_file = clinical or (Path(study) / "clinical.yaml" if (Path(study) / "clinical.yaml").exists() else None)
    if clinical_file is not None:
        load_clinical(clinical_file)
    check_configs()
    check_study_and_out(Path(study), Path(out))
    Path(out).mkdir(parents=True, exist_ok=True)
    with folder_lock(out, on_wait=lambda: print(f"{out}: another legmri run is writing here; waiting for it to end",
                                                 file=sys.stderr)):
        claim_out(Path(out))
        start_ns = time.time_ns()
        for stage in (lambda: ingest(study, out, show_phi=show_phi),
                      lambda: segment(out, device=device, models=models, anchor_level=anchor_level),
                      lambda: measure(out), lambda: rules(out, clinical=clinical),
                      lambda: report(out, show_phi=show_phi, deidentify=deidentify)):
            stage()
            interrupt.check()  # a Ctrl-C swallowed inside the stage stops the run before the next one
        removed = remove_stale(Path(out), start_ns)
        if removed:
            update_provenance(Path(out), notes=[f"removed {len(removed)} file(s) of an earlier run that this run did "
                                                f"not write: {', '.join(removed[:10])}"
                                                f"{' ...' if len(removed) > 10 else ''}"])
    print(f"{study}: done -> {StudyDir(out).report_html}")
    return EXIT_OK
