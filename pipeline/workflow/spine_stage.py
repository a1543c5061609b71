"""Spine part of the segment and measure stages, and spine bundle training/evaluation on lumbar phantoms.

segment: sagittal T2 -> U-Net classes -> levels counted from the sacrum -> ``spine/labels_sag.nii.gz``; each axial
T2 stack -> classes -> discs named by the nearest sagittal disc plane -> ``spine/labels_ax.nii.gz`` (``_2``, ``_3``
for further stacks, in the order of their roles); levels, method, confidence and flags -> ``spine/levels.json``;
the probability maps the measurements read sub-voxel walls from -> ``spine/<structure>_probability_<series>.nii.gz``
(dural sac of every series; disc and posterior elements of the axial stacks).
measure: label and probability maps -> ``spine/measurements.csv`` and the spine section of ``summary.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import write_json, write_text
from pipeline.core.config import load_config
from pipeline.core.errors import EXIT_OK, UsageError
from pipeline.core.labels import registry
from pipeline.core.provenance import update_provenance
from pipeline.core.summary import Summary, update_summary_section
from pipeline.core.volume import Volume
from pipeline.io.nifti import load_volume, save_probability, save_volume
from pipeline.spine.levels import DISC_LEVELS, LevelResult, label_levels, levels_from_labels, name_axial_discs
from pipeline.spine.measure import RECESS_WALLS, measure_levels
from pipeline.workflow.calf_measure import csv_text

AX_ROLE = re.compile(r"^lumbar_ax_t2(_(\d+))?$")


def _series(out: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    index = json.loads((out / "series.json").read_text(encoding="utf-8"))
    vols = [s for s in index["series"] if s.get("volume")]
    sag = next((s for s in vols if s["role"] == "lumbar_sag_t2"), None)
    axs = sorted((s for s in vols if AX_ROLE.match(s["role"])), key=lambda s: int(AX_ROLE.match(s["role"]).group(2) or 1))
    return sag, axs


def _ax_label_name(role: str) -> str:
    n = AX_ROLE.match(role).group(2)
    return "labels_ax.nii.gz" if n is None else f"labels_ax_{n}.nii.gz"


def _soft_name(label_name: str, structure: str = "sac") -> str:
    """``labels_sag.nii.gz`` -> ``sac_probability_sag.nii.gz`` (and likewise for the axial stacks and the other
    structures whose probability is kept: ``disc``, ``posterior_elements``)."""
    return label_name.replace("labels_", f"{structure}_probability_", 1)


@dataclass
class SpineSegmentation:
    """The network's output for one study: levels (with the sagittal class map), the level-named axial class maps,
    the dural sac probability of every series on its grid (for sub-voxel sac measurements) and the disc and
    posterior-element probabilities of every axial stack (for the sub-voxel walls of the lateral recess)."""

    levels: LevelResult
    axials: list[Volume]
    sac_sag: Volume
    sac_axials: list[Volume]
    wall_axials: list[dict[str, Volume]]


def segment_series(bundle: Any, sag: Volume, axials: list[Volume], device: str = "cpu") -> SpineSegmentation:
    """Segment a sagittal T2 and its axial stacks, count the levels and name the axial discs."""
    reg = registry("spine")
    classes, soft = bundle.predict_soft([sag], ("dural_sac",), device=device)
    levels = label_levels(classes, reg, load_config("default")["spine"])
    named, sac_axials, wall_axials = [], [], []
    for vol in axials:
        ax_classes, ax_soft = bundle.predict_soft([vol], ("dural_sac", *RECESS_WALLS), device=device)
        named.append(name_axial_discs(ax_classes, levels, reg))
        sac_axials.append(ax_soft["dural_sac"])
        wall_axials.append({k: ax_soft[k] for k in RECESS_WALLS})
    return SpineSegmentation(levels, named, soft["dural_sac"], sac_axials, wall_axials)


def segment(out: Path, device: str = "cpu", models: Any = None) -> dict[str, Any]:
    """Segment and level-label the lumbar series of the study in ``out``."""
    from pipeline.segment.bundle import BundleCache
    from pipeline.workflow.calf_segment import _PROCESS_CACHE

    sag, axs = _series(out)
    if sag is None:
        return {"status": "no sagittal lumbar T2 series"}
    bundle = (models if isinstance(models, BundleCache) else _PROCESS_CACHE).get(
        load_config("default")["segment"]["spine_bundle"])
    seg = segment_series(bundle, load_volume(out / sag["volume"]), [load_volume(out / s["volume"]) for s in axs],
                         device=device)
    levels = seg.levels
    save_volume(levels.labels, out / "spine" / "labels_sag.nii.gz", dtype=np.int16)
    save_probability(seg.sac_sag, out / "spine" / _soft_name("labels_sag.nii.gz"))
    for s, classes, sac, walls in zip(axs, seg.axials, seg.sac_axials, seg.wall_axials):
        name = _ax_label_name(s["role"])
        save_volume(classes, out / "spine" / name, dtype=np.int16)
        save_probability(sac, out / "spine" / _soft_name(name))
        for structure, prob in walls.items():
            save_probability(prob, out / "spine" / _soft_name(name, structure))
    write_json(out / "spine" / "levels.json", {"method": levels.method, "confidence": levels.confidence,
                                               "flags": levels.flags, "levels": sorted(levels.discs)})
    update_provenance(out, models={"spine": bundle.provenance()}, notes=[f"spine: {f}" for f in levels.flags])
    return {"status": "segmented", "levels": sorted(levels.discs), "confidence": levels.confidence,
            "flags": levels.flags}


def _unavailable(reason: str) -> Summary:
    s = Summary()
    s.set("spine.available", False)
    for level in DISC_LEVELS:
        for key in ("dsca_mm2", "ap_diameter_mm", "central_grade"):
            s.set_null(f"spine.{level}.{key}", reason)
        for side in ("left", "right"):
            for key in ("lateral_recess_depth_mm", "lateral_recess_grade", "foramen_area_mm2", "foramen_grade"):
                s.set_null(f"spine.{level}.{side}.{key}", reason)
    return s


def measure(out: Path) -> dict[str, Any]:
    """Measure the canal at every disc level of the study in ``out``."""
    sag, axs = _series(out)
    labels_sag = out / "spine" / "labels_sag.nii.gz"
    if sag is None or not labels_sag.exists():
        reason = "no lumbar sagittal T2 series in the study" if sag is None else "spine not segmented"
        update_summary_section(out, "spine", _unavailable(reason))
        return {"status": reason}
    reg = registry("spine")
    info = json.loads((out / "spine" / "levels.json").read_text()) if (out / "spine" / "levels.json").exists() else {}
    levels = levels_from_labels(load_volume(labels_sag), reg, info.get("method", ""), info.get("confidence", 1.0),
                                info.get("flags"))
    names = [_ax_label_name(s["role"]) for s in axs if (out / "spine" / _ax_label_name(s["role"])).exists()]
    axials = [load_volume(out / "spine" / n) for n in names]
    res = measure_levels(levels, levels.labels, axials, reg, load_config("default")["spine"],
                         load_config("innervation"), sac_sag=_optional_volume(out / "spine" / _soft_name(labels_sag.name)),
                         sac_axials=[_optional_volume(out / "spine" / _soft_name(n)) for n in names],
                         wall_axials=[_optional_walls(out / "spine", n) for n in names])
    write_text(out / "spine" / "measurements.csv", csv_text(res.rows, ["level", "side", "metric", "value", "unit",
                                                                       "grade"]))
    write_json(out / "spine" / "marks.json", {"coordinates": "world RAS, mm", "levels": res.marks})
    update_summary_section(out, "spine", res.summary)
    return {"status": "measured", "levels": sorted(levels.discs)}


def _optional_volume(path: Path) -> Volume | None:
    """The volume at ``path``, or None when it was not written (label maps from elsewhere, e.g. `legmri measure`
    on hand-drawn labels: the measurements then use the label maps alone)."""
    return load_volume(path) if path.exists() else None


def _optional_walls(folder: Path, label_name: str) -> dict[str, Volume] | None:
    """The disc and posterior-element probability maps of an axial stack, or None unless both were written."""
    paths = {k: folder / _soft_name(label_name, k) for k in RECESS_WALLS}
    return {k: load_volume(p) for k, p in paths.items()} if all(p.exists() for p in paths.values()) else None


# -- training and evaluation ------------------------------------------------------------------------------------
def spine_class_map(labels: Volume) -> Volume:
    reg = registry("spine")
    lut = np.zeros(len(reg.labels) + 1, np.uint8)
    for lab in reg.labels:
        lut[lab.id] = reg.class_id(lab.structure)
    return labels.with_array(lut[np.asarray(labels.array, np.int64)])


def spine_phantom_cases(seed: int, fast: bool = False) -> list[tuple[list[Volume], Volume]]:
    """Every series of the lumbar phantom of ``seed`` as a (T2 image, class map) training case."""
    from pipeline.synth.lumbar import random_lumbar

    ph = random_lumbar(seed, fast=fast)
    return [([s.volume], spine_class_map(s.labels)) for s in ph.series]


def synthetic_spine_cases(seeds: list[int], fast: bool = False, workers: int = 1
                          ) -> list[tuple[list[Volume], Volume]]:
    """The training cases of the lumbar phantoms of ``seeds``, in seed order (generated by ``workers``
    processes)."""
    if workers <= 1:
        per_seed = [spine_phantom_cases(s, fast) for s in seeds]
    else:
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        with ProcessPoolExecutor(max_workers=workers) as pool:
            per_seed = list(pool.map(partial(spine_phantom_cases, fast=fast), seeds))
    return [case for cases in per_seed for case in cases]


def train(out: Path, data: Path | None = None, synthetic: int | None = None, epochs: int | None = None,
          seed: int = 0, device: str = "cpu", overrides: dict[str, Any] | None = None) -> int:
    """Train the spine bundle (one 2-D U-Net for sagittal and axial T2 slices, sliced across the acquisition)."""
    from pipeline.segment.train import TrainConfig, train_bundle

    c = load_config("default")["train"]["spine"]
    cfg = TrainConfig(name=Path(out).name, anatomy="spine", labels=list(registry("spine").classes),
                      input_channels=["t2"], slice_plane="acquisition",
                      target_spacing_mm=tuple(c["target_spacing_mm"]), patch=tuple(c["patch"]),
                      batch_size=c["batch_size"], max_iterations=c["max_iterations"], max_minutes=c["max_minutes"],
                      learning_rate=c["learning_rate"], validate_every=c["validate_every"], seed=seed, device=device,
                      mirror_axes=tuple(c.get("test_time_mirror_axes", ())))
    from pipeline.workflow.train import apply_overrides, apply_oversampling, phantom_rendering, progress

    apply_oversampling(cfg, c)
    if epochs is not None:
        cfg.max_iterations = epochs * cfg.validate_every
    apply_overrides(cfg, overrides)
    if synthetic is not None:
        if synthetic < 2:
            raise UsageError("--synthetic needs at least 2 phantom studies.")
        rendering, fast = phantom_rendering("spine")
        n_val = min(int(c["synthetic_validation_cases"]), max(1, synthetic // 5))
        train_seeds = list(range(synthetic - n_val))
        val_seeds = list(range(synthetic - n_val, synthetic))
        cfg.training_data = {"source": "synthetic lumbar phantoms (pipeline.synth.lumbar, LumbarSpec.random)",
                             "train_seeds": [train_seeds[0], train_seeds[-1]],
                             "validation_seeds": [val_seeds[0], val_seeds[-1]],
                             "series": "sagittal T2 and disc-angled axial T2 stacks",
                             "rendering": rendering}
        record = train_bundle(synthetic_spine_cases(train_seeds, fast, cfg.threads),
                              synthetic_spine_cases(val_seeds, fast, cfg.threads), cfg, Path(out), log=progress)
    else:
        from pipeline.segment.data import read_msd_dataset

        cfg.training_data = {"source": f"MSD/nnU-Net dataset {Path(data).name}"}
        cases = read_msd_dataset(Path(data), cfg.labels, cfg.input_channels)
        n_val = max(1, len(cases) // 5)
        record = train_bundle(cases[n_val:], cases[:n_val], cfg, Path(out), log=progress)
    print(f"wrote {out} (best validation mean Dice at iteration {record['best_iteration']})")
    return EXIT_OK
