"""Spine driver of the segment and measure stages.

segment: sagittal T2 -> U-Net classes -> levels counted from the sacrum -> ``spine/labels_sag.nii.gz``; each axial
T2 stack -> classes -> discs named by the nearest sagittal disc plane -> ``spine/labels_ax.nii.gz`` (``_2``, ``_3``
for further stacks, in the order of their roles); levels, method, confidence and flags -> ``spine/levels.json``;
the probability maps the measurements read sub-voxel walls from (dural sac of every series; disc and posterior
elements of the axial stacks). measure: label and probability maps -> ``spine/measurements.csv``,
``spine/marks.json`` and the spine section of ``summary.json``. A study with axial stacks and no sagittal image:
the discs each stack shows, numbered upwards (``disc_1`` ...; :mod:`pipeline.spine.axial_only`), into the axial
label maps and ``levels.json`` (``axial_discs``), each measured on its own stack. Paths come from
:class:`~pipeline.core.layout.StudyDir`; the work is done by :mod:`pipeline.spine` and the bundle's ``predict_soft``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import write_json, write_text
from pipeline.core.config import load_config
from pipeline.core.errors import BadInputError
from pipeline.core.labels import registry
from pipeline.core.layout import StudyDir
from pipeline.core.provenance import update_provenance
from pipeline.core.summary import Summary, update_summary_section
from pipeline.core.tables import csv_text
from pipeline.core.verdict import REVIEW, level_verdict, worst
from pipeline.core.volume import Volume
from pipeline.io.label_tables import write_label_tables
from pipeline.io.nifti import load_volume, save_probability, save_volume
from pipeline.spine.axial_only import AxialDisc, axial_level_result, find_axial_discs
from pipeline.spine.levels import (
    DISC_LEVELS,
    Anchor,
    LevelResult,
    label_levels,
    levels_from_labels,
    name_axial_discs,
    with_level_classes,
)
from pipeline.spine.measure import (
    RECESS_WALLS,
    AxialStack,
    SpineMeasurements,
    measure_axial_only,
    measure_levels,
)
from pipeline.spine.qc import SpineQC, judge_axial_only, judge_spine

MEASUREMENT_COLUMNS = ["level", "side", "metric", "value", "unit", "grade", "grade_rsna", "qc_status"]


@dataclass
class SpineSegmentation:
    """The network's output for one study: levels (with the sagittal class map), the dural sac probability of the
    sagittal image, and per axial stack its level-named class map with its probability maps."""

    levels: LevelResult
    sac_sag: Volume | None  # None without a sagittal image
    axials: list[AxialStack]


def configured_level_bundle(get: Callable[[str], Any]) -> Any:
    """The bundle the levels are counted on (``segment.spine_level_bundle`` of the configuration), obtained through
    ``get`` (a bundle cache's ``get``, or :func:`~pipeline.segment.bundle.load_bundle`); None when not configured."""
    name = load_config("default")["segment"].get("spine_level_bundle")
    return get(name) if name else None


def segment_series(bundle: Any, sag: Volume, axials: list[Volume], device: str = "cpu",
                   anchor: Anchor | None = None, level_bundle: Any = None) -> SpineSegmentation:
    """Segment a sagittal T2 and its axial stacks, name (or number) the levels and name the axial discs. With
    ``level_bundle`` (``segment.spine_level_bundle``) the levels are counted on that network's bones and discs of
    the sagittal image and ``bundle``'s canal (:func:`~pipeline.spine.levels.with_level_classes`); ``bundle`` alone
    segments the canal and the axial stacks."""
    reg = registry("spine")
    classes, soft = bundle.predict_soft([sag], ("dural_sac",), device=device)
    if level_bundle is not None:
        classes = with_level_classes(classes, level_bundle.predict([sag], device=device), reg)
    levels = label_levels(classes, reg, load_config("default")["spine"], anchor=anchor)
    stacks = []
    for vol in axials:
        ax_classes, ax_soft = bundle.predict_soft([vol], ("dural_sac", *RECESS_WALLS), device=device)
        stacks.append(AxialStack(name_axial_discs(ax_classes, levels, reg), ax_soft["dural_sac"],
                                 {k: ax_soft[k] for k in RECESS_WALLS}))
    return SpineSegmentation(levels, soft["dural_sac"], stacks)


def _save(study: StudyDir, roles: list[str], seg: SpineSegmentation,
          axial_discs: dict[str, Any] | None = None) -> None:
    """Write the label and probability maps and ``levels.json`` of a segmentation (with ``axial_discs``, the
    discs of a study without a sagittal image, :meth:`~pipeline.spine.axial_only.AxialDisc.as_json`)."""
    levels = seg.levels
    if levels.labels is not None:
        save_volume(levels.labels, study.spine_labels_sag, dtype=np.int16)
    write_label_tables(study, "spine")
    if seg.sac_sag is not None:
        save_probability(seg.sac_sag, study.spine_probability(study.spine_labels_sag))
    for role, stack in zip(roles, seg.axials):
        path = study.spine_labels_for(role)
        save_volume(stack.labels, path, dtype=np.int16)
        save_probability(stack.sac, study.spine_probability(path))
        for structure, prob in (stack.walls or {}).items():
            save_probability(prob, study.spine_probability(path, structure))
    write_json(study.spine_levels, {"method": levels.method, "confidence": levels.confidence,
                                    "flags": levels.flags, "levels": sorted(levels.discs),
                                    "inferred": levels.inferred}
               | ({} if axial_discs is None else {"axial_discs": axial_discs}))


def segment_axial_series(bundle: Any, axials: list[Volume], device: str = "cpu", flags: list[str] | None = None
                         ) -> tuple[list[AxialDisc], SpineSegmentation]:
    """Segment the axial stacks of a study without a sagittal image, find their discs and number them upwards
    (:func:`~pipeline.spine.axial_only.find_axial_discs`); the discs, and the segmentation with each stack's
    label map (discs named ``disc_1`` ...) and probability maps. ``flags`` join the study's level flags."""
    reg = registry("spine")
    predicted = [bundle.predict_soft([vol], ("dural_sac", *RECESS_WALLS), device=device) for vol in axials]
    class_maps = [classes for classes, _ in predicted]
    discs = find_axial_discs(class_maps, reg, load_config("default")["spine"])
    levels = axial_level_result(discs, class_maps, flags or [])
    return discs, SpineSegmentation(levels, None, [
        AxialStack(name_axial_discs(classes, levels, reg), soft["dural_sac"], {k: soft[k] for k in RECESS_WALLS})
        for classes, soft in predicted])


def anchor_of(study: StudyDir, anchor_level: str | None) -> Anchor | None:
    """The reader's level anchor: ``anchor_level`` when given, else ``spine_anchor_level`` of study.yaml (kept in
    series.json by ingest); None when neither."""
    text = anchor_level or study.series().raw.get("spine_anchor_level")
    if not text:
        return None
    try:
        return Anchor.parse(text)
    except ValueError as exc:
        raise BadInputError(str(exc), path=study.series_json if not anchor_level else None,
                            fix="give --anchor-level L3 or vertebra_2=L3 (spine_anchor_level in study.yaml)") from exc


def segment(study: StudyDir, models: Any, device: str = "cpu", anchor_level: str | None = None) -> dict[str, Any]:
    """Segment and level-label the lumbar series of ``study`` with the bundle of ``models`` (a bundle cache);
    ``anchor_level`` as in :func:`anchor_of`. A study with axial stacks and no sagittal image is segmented by
    :func:`segment_axial_only`."""
    series = study.series()
    sag = series.volume("lumbar_sag_t2")
    stacks = series.axial_stacks()
    if sag is None:
        if not stacks:
            return {"status": "no lumbar T2 series"}
        return segment_axial_only(study, stacks, models, device, anchor_level)
    anchor = anchor_of(study, anchor_level)
    bundle = models.get(load_config("default")["segment"]["spine_bundle"])
    level_bundle = configured_level_bundle(models.get)
    seg = segment_series(bundle, load_volume(sag), [load_volume(s.volume) for s in stacks], device=device,
                         anchor=anchor, level_bundle=level_bundle)
    _save(study, [s.role for s in stacks], seg)
    levels = seg.levels
    used = {"spine": bundle.provenance()} | ({} if level_bundle is None else {"spine_levels": level_bundle.provenance()})
    update_provenance(study.root, models=used, notes=[f"spine: {f}" for f in levels.flags])
    return {"status": "segmented", "levels": sorted(levels.discs), "confidence": levels.confidence,
            "flags": levels.flags, "anchor": None if anchor is None else str(anchor)}


def segment_axial_only(study: StudyDir, stacks: list[Any], models: Any, device: str = "cpu",
                       anchor_level: str | None = None) -> dict[str, Any]:
    """Segment the axial ``stacks`` (series entries) of a study without a sagittal image, find their discs and
    number them upwards (:mod:`pipeline.spine.axial_only`); write each stack's label and probability maps and
    ``levels.json`` with the discs (``axial_discs``: stack, centre, normal) that the measure stage reads. A level
    anchor names vertebrae counted on a sagittal image, so it is not used here (flagged)."""
    bundle = models.get(load_config("default")["segment"]["spine_bundle"])
    anchor = anchor_level or study.series().raw.get("spine_anchor_level")
    extra = ([f"the level anchor {anchor} names a vertebra counted on a sagittal image; the study has none, so it "
              "is not used"] if anchor else [])
    discs, seg = segment_axial_series(bundle, [load_volume(s.volume) for s in stacks], device, extra)
    levels = seg.levels
    roles = [s.role for s in stacks]
    _save(study, roles, seg, axial_discs={d.level: d.as_json(roles) for d in discs})
    update_provenance(study.root, models={"spine": bundle.provenance()}, notes=[f"spine: {f}" for f in levels.flags])
    return {"status": "segmented", "levels": [d.level for d in discs], "confidence": 0.0, "flags": levels.flags,
            "anchor": None}


def unavailable_summary(reason: str) -> Summary:
    """The spine section of a study without spine measurements: every level key null with ``reason``."""
    s = Summary()
    s.set("spine.available", False)
    for level in DISC_LEVELS:
        for key in ("dsca_mm2", "ap_diameter_mm", "central_grade", "canal_rsna"):
            s.set_null(f"spine.{level}.{key}", reason)
        for side in ("left", "right"):
            for key in ("lateral_recess_depth_mm", "lateral_recess_grade", "foramen_area_mm2", "foramen_grade",
                        "subarticular_rsna", "foraminal_rsna"):
                s.set_null(f"spine.{level}.{side}.{key}", reason)
    return s


def _optional_volume(path: Path) -> Volume | None:
    """The volume at ``path``, or None when it was not written (label maps from elsewhere, e.g. `legmri measure`
    on hand-drawn labels: the measurements then use the label maps alone)."""
    return load_volume(path) if path.exists() else None


def _saved_stack(study: StudyDir, labels: Path) -> AxialStack:
    """An axial stack as saved by :func:`segment`: the walls only when both probability maps were written."""
    walls = {k: study.spine_probability(labels, k) for k in RECESS_WALLS}
    return AxialStack(load_volume(labels), _optional_volume(study.spine_probability(labels)),
                      {k: load_volume(p) for k, p in walls.items()} if all(p.exists() for p in walls.values())
                      else None)


def _saved_levels(study: StudyDir) -> LevelResult:
    info = study.read_json(study.spine_levels, {})
    return levels_from_labels(load_volume(study.spine_labels_sag), registry("spine"), info.get("method", ""),
                              info.get("confidence", 1.0), info.get("flags"), info.get("inferred"))


def measure(study: StudyDir) -> dict[str, Any]:
    """Measure the canal at every disc level of ``study`` (at every disc its axial stacks show, when it has no
    sagittal image: :func:`_measure_axial_only`)."""
    series = study.series()
    no_series = series.volume("lumbar_sag_t2") is None
    if no_series and series.axial_stacks():
        return _measure_axial_only(study)
    if no_series or not study.spine_labels_sag.exists():
        reason = "no lumbar T2 series in the study" if no_series else "spine not segmented"
        update_summary_section(study.root, "spine", unavailable_summary(reason))
        return {"status": reason}
    levels = _saved_levels(study)
    labels = [p for p in (study.spine_labels_for(s.role) for s in series.axial_stacks()) if p.exists()]
    sac_sag = _optional_volume(study.spine_probability(study.spine_labels_sag))
    res = measure_levels(levels, [_saved_stack(study, p) for p in labels], registry("spine"),
                         load_config("default")["spine"], load_config("innervation"), sac_sag=sac_sag)
    qc = judge_spine(load_volume(study.spine_labels_sag), registry("spine"), load_config("qc")["spine"],
                     levels.flags, res.summary.values, inferred=levels.inferred, sac_probability=sac_sag,
                     ap_views=res.ap_views)
    for warning in series.repeat_warnings(["lumbar_sag_t2"], "spine"):
        qc.status, qc.reasons = worst(qc.status, REVIEW), [*qc.reasons, warning]
    _write_measured(study, res, qc)
    return {"status": "measured", "levels": sorted(levels.discs), "qc_status": qc.status}


def _measure_axial_only(study: StudyDir) -> dict[str, Any]:
    """Measure the discs that :func:`segment_axial_only` found on the axial stacks of a study without a sagittal
    image (:func:`~pipeline.spine.measure.measure_axial_only`) and judge them
    (:func:`~pipeline.spine.qc.judge_axial_only`)."""
    info = study.read_json(study.spine_levels, {}) or {}
    if "axial_discs" not in info:
        reason = "spine not segmented"
        update_summary_section(study.root, "spine", unavailable_summary(reason))
        return {"status": reason}
    roles = [s.role for s in study.series().axial_stacks()]
    stacks = [_saved_stack(study, study.spine_labels_for(role)) for role in roles]
    discs = sorted((AxialDisc.from_json(level, d, roles) for level, d in info["axial_discs"].items()),
                   key=lambda d: int(d.level.split("_")[1]))
    reg = registry("spine")
    res = measure_axial_only(discs, stacks, reg, load_config("default")["spine"], info.get("flags", []))
    qc = judge_axial_only([s.labels for s in stacks], discs, reg, load_config("qc")["spine"], res.summary.values,
                          [s.sac for s in stacks])
    _write_measured(study, res, qc)
    return {"status": "measured", "levels": [d.level for d in discs], "qc_status": qc.status}


def _write_measured(study: StudyDir, res: SpineMeasurements, qc: SpineQC) -> None:
    """Write the QC verdict into the measurements and the files of the measure stage: ``spine/qc.json``,
    ``spine/measurements.csv`` (each row with its level's verdict), ``spine/marks.json`` and the spine section of
    ``summary.json``."""
    for key, value in qc.as_summary().items():
        res.summary.set(key, value)
    write_json(study.spine_qc, qc.as_json())
    rows = [{**row, "qc_status": level_verdict(qc.levels[row["level"]].status if row["level"] in qc.levels else None,
                                               qc.status) or ""}
            for row in res.rows]  # each row carries its level's QC verdict (empty where the level was not judged)
    write_text(study.spine_measurements, csv_text(rows, MEASUREMENT_COLUMNS))
    write_json(study.spine_marks, {"coordinates": "world RAS, mm", "levels": res.marks})
    update_summary_section(study.root, "spine", res.summary)
