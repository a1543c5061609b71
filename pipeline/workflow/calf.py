"""Calf driver of the segment and measure stages.

segment: Dixon water + fat (or 2-point Dixon from in-phase / opposed-phase, or the multi-echo fit), else one
anatomical series (T1w, T2w, PDw, STIR) -> U-Net classes -> legs and sides -> ``calf/labels.nii.gz``. measure: label
map + the images -> ``calf/measurements.csv``, ``calf/slices.csv`` and the calf section of ``summary.json`` (fat
fraction null, with the reason, when only an anatomical series was given). Inputs and outputs go through :class:`~pipeline.core.layout.StudyDir`; the work is
done by the pure functions of :mod:`pipeline.calf` and the bundle's ``predict``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.calf.dixon import two_point_dixon, water_fat_identity
from pipeline.calf.extent import Fold, drop_dim_slab_ends, drop_distal_fold, without_folds
from pipeline.calf.fatfraction import structure_ff_rows
from pipeline.calf.legs import sided_label_map
from pipeline.calf.measure import CalfImages, measure_calf_labels, voxel_ff_source
from pipeline.calf.metrics import slice_axis
from pipeline.calf.qc import REVIEW, flip_agreement, judge_calf, structure_means
from pipeline.calf.waterfat import (
    WaterFatMaps,
    echo_phase_label,
    fit_echoes,
    spectrum_from_config,
    t1_bias_limit,
    t1_bias_statement,
    with_fat_dominant,
)
from pipeline.core.atomic import write_json, write_text
from pipeline.core.config import load_config
from pipeline.core.errors import BadInputError, InternalError
from pipeline.core.labels import Registry, registry
from pipeline.core.layout import SeriesIndex, StudyDir
from pipeline.core.provenance import update_provenance
from pipeline.core.summary import Summary, update_summary_section
from pipeline.core.tables import csv_text
from pipeline.core.verdict import group_verdict, join_reasons
from pipeline.core.volume import Volume
from pipeline.io.label_tables import write_label_tables
from pipeline.io.nifti import load_volume, save_volume
from pipeline.io.study import EchoSet, echo_set

KEY_METRICS = ("volume_ml", "ff_pct", "lean_volume_ml", "fat_volume_ml", "max_csa_mm2")
MEASUREMENT_COLUMNS = ["side", "structure", "metric", "value", "unit", "flag", "qc_status"]
LEG_COLUMNS = ["side", "metric", "value", "unit", "qc_status"]
ASYMMETRY_COLUMNS = ["structure", "metric", "value", "unit", "qc_status"]
SLICE_COLUMNS = ["z_mm", "side", "muscle", "csa_mm2", "ff_pct", "girth_mm", "qc_status"]
NO_CALF = ("no calf series (needs calf_water + calf_fat, calf_inphase + calf_outphase, three or more calf echoes "
           "with their field strength, or one anatomical calf series: calf_anatomical, calf_t1, calf_t2, calf_stir)")
NO_FF = ("no fat fraction: the study has one weighted calf image ({role}) and no Dixon or multi-echo acquisition, "
         "whose signal does not separate water and fat")


@dataclass
class CalfInputs:
    """The images a study gives the calf stages and how they were obtained: Dixon water and fat, or (``water`` and
    ``fat`` None) one anatomical image of ``anatomical_role``."""

    water: Volume | None
    fat: Volume | None
    how: str
    anatomical: Volume | None = None
    anatomical_role: str | None = None
    warnings: list[str] = field(default_factory=list)  # facts about the inputs the QC verdict must show
    no_ff_reason: str | None = None  # set when water and fat are given but their fat fraction is not to be used
    roles: tuple[str, ...] = ()  # the ingested series the images came from

    @property
    def has_water_fat(self) -> bool:
        return self.water is not None and self.fat is not None

    @property
    def computed(self) -> bool:
        """Water and fat computed here from magnitude images (not the scanner's Dixon reconstruction)."""
        return self.has_water_fat and "calf_water" not in self.roles


def anatomical_role(series: SeriesIndex, roles: list[str]) -> str | None:
    """The first of ``roles`` (``calf.anatomical_roles``, in order of preference) that the study holds."""
    return next((r for r in roles if series.volume(r) is not None), None)


def calf_inputs(series: SeriesIndex, study: StudyDir | None = None, fitted: EchoFit | None = None
                ) -> CalfInputs | None:
    """The exported Dixon water and fat images, else 2-point Dixon from in-phase / opposed-phase, else the water and
    fat of the multi-echo fit (``fitted``, a fit not yet written; else :func:`fit_water_fat`'s files when ``study``
    holds them), else one anatomical series (the first of ``calf.anatomical_roles`` present), else None."""
    inputs = _water_fat_inputs(series, study, fitted)
    if inputs is None:
        role = anatomical_role(series, list(load_config("default")["calf"]["anatomical_roles"]))
        if role is None:
            return None
        inputs = CalfInputs(None, None, f"one anatomical series ({role}); no fat fraction",
                            load_volume(series.volume(role)), role, roles=(role,))
    inputs.warnings.extend(series.repeat_warnings(inputs.roles, "calf"))
    return inputs


MULTI_ECHO = "water/fat of the multi-echo fit (calf/ff_map.nii.gz)"


def _water_fat_inputs(series: SeriesIndex, study: StudyDir | None, fitted: EchoFit | None = None
                      ) -> CalfInputs | None:
    vols = series.volumes()
    if "calf_water" in vols and "calf_fat" in vols:
        w, f = vols["calf_water"], vols["calf_fat"]
        water, fat = load_volume(w), load_volume(f)
        inputs = checked_water_fat(water, fat, _identity_of(water, fat, (str(w), str(f), w.stat().st_mtime_ns,
                                                                          f.stat().st_mtime_ns)))
        inputs.roles = ("calf_water", "calf_fat")
        return inputs
    if "calf_inphase" in vols and "calf_outphase" in vols:
        w, f = _dixon_of(vols["calf_inphase"], vols["calf_outphase"])
        lone = [r for r in ("calf_water", "calf_fat") if r in vols]
        warnings = [f"the study has a scanner {lone[0].removeprefix('calf_')} image without its partner; water and "
                    "fat were computed from in-phase/opposed-phase instead (2-point Dixon), whose fat fraction is "
                    "less exact"] if lone else []
        return CalfInputs(w, f, str(w.meta["derived"]), warnings=warnings, roles=("calf_inphase", "calf_outphase"))
    if fitted is not None and fitted.fitted:  # the arrays _save_echo_maps writes, as float32
        water, fat = _fitted_water_fat(fitted.maps)
        return CalfInputs(fitted.grid.with_array(water), fitted.grid.with_array(fat), MULTI_ECHO)
    if study is not None and study.calf_water_fit.exists() and study.calf_fat_fit.exists():
        return CalfInputs(load_volume(study.calf_water_fit), load_volume(study.calf_fat_fit), MULTI_ECHO)
    return None


_IDENTITIES: dict[tuple[str, str, int, int], tuple[str, float | None]] = {}
_DIXON: dict[tuple[Any, ...], tuple[Volume, Volume]] = {}


def _dixon_of(inphase: Path, outphase: Path) -> tuple[Volume, Volume]:
    """:func:`two_point_dixon` of two ingested files, computed once per process for the same files (paths, inodes,
    sizes and modification times; the segment and measure stages of ``legmri run`` ask for it three times); each
    call gets its own copy of the arrays."""
    key = tuple((str(p), p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in (inphase, outphase))
    if key not in _DIXON:
        _DIXON.clear()
        _DIXON[key] = two_point_dixon(load_volume(inphase), load_volume(outphase))
    return tuple(v.with_array(v.array.copy(order="K")) for v in _DIXON[key])  # type: ignore[return-value]


def _identity_of(water: Volume, fat: Volume, files: tuple[str, str, int, int]) -> tuple[str, float | None]:
    """:func:`water_fat_identity` of two ingested volumes, computed once per process for the same ``files`` (paths
    and modification times; the segment and measure stages of ``legmri run`` ask for it in turn)."""
    if files not in _IDENTITIES:
        _IDENTITIES[files] = water_fat_identity(water, fat, load_config("default")["calf"]["water_fat_identity"])
    return _IDENTITIES[files]


def checked_water_fat(water: Volume, fat: Volume, identity: tuple[str, float | None] | None = None) -> CalfInputs:
    """Scanner water and fat images, checked against their signal (:func:`water_fat_identity`, or ``identity`` when
    already known): images labelled the wrong way round are swapped back, with a warning; when the signal cannot
    tell, the fat fraction is withheld."""
    verdict, ring = identity or water_fat_identity(water, fat,
                                                   load_config("default")["calf"]["water_fat_identity"])
    if verdict == "swapped":
        return CalfInputs(fat, water, "scanner water/fat images, swapped back (labelled the wrong way round)",
                          warnings=[f"the images labelled water and fat are the wrong way round (the subcutaneous "
                                    f"fat reads {ring:.0f} % fat as labelled, about 85 % in any adult); legmri "
                                    "swapped them back: check the series descriptions"])
    if verdict == "uncertain":
        reason = (f"fat fraction withheld: the subcutaneous fat reads {ring:.0f} % fat, neither fat (about 85 %) nor "
                  "swapped water and fat (about 15 %): the images labelled water and fat may not be a water/fat pair")
        return CalfInputs(water, fat, "scanner water/fat images", warnings=[reason], no_ff_reason=reason)
    return CalfInputs(water, fat, "scanner water/fat images")


@dataclass(frozen=True)
class EchoFit:
    """The fat-fraction maps of a study computed here from magnitude images, and the grid they lie on: a multi-echo
    fit (``fitted``; the first echo's grid), or the FF of water and fat from in-phase and opposed-phase images (no
    R2*, no fitted water and fat; ``other_branch`` the fat-dominant reading 1 - FF)."""

    grid: Volume
    maps: WaterFatMaps
    fitted: bool = True
    inphase_echo: tuple[Volume, str] | None = None  # the acquired in-phase echo and its description (:func:`in_phase_echo`)


def fit_water_fat(study: StudyDir) -> dict[str, Any]:
    """Fat-fraction map of ``study`` whenever its images allow one, before (and whatever becomes of) segmentation.

    Scanner water/fat or in/opposed-phase images: the voxel FF of the measurements (:func:`pipeline.calf.measure.voxel_ff`) as
    ``calf/ff_map.nii.gz``. Three or more calf echoes: the multi-echo fit (:func:`fit_echoes`) writes the FF and R2*
    maps and the fitted water and fat images. Returns facts for provenance.
    """
    return _fit_water_fat(study)[0]


def _save_echo_maps(study: StudyDir, fit: EchoFit) -> None:
    """The maps of ``fit`` as ``calf/ff_map`` (percent) and, for a multi-echo fit, ``calf/r2star_map`` (1/s) and the
    fitted water and fat images."""
    ref, maps = fit.grid, fit.maps
    save_volume(ref.with_array((100.0 * maps.ff).astype(np.float32)), study.calf_ff_map)
    if not fit.fitted:
        return
    save_volume(ref.with_array(maps.r2star.astype(np.float32)), study.calf_r2star_map)
    water, fat = _fitted_water_fat(maps)
    save_volume(ref.with_array(water), study.calf_water_fit)
    save_volume(ref.with_array(fat), study.calf_fat_fit)


def _fitted_water_fat(maps: WaterFatMaps) -> tuple[np.ndarray, np.ndarray]:
    """The water and fat images of a multi-echo fit (float32): rho (1 - FF) and rho FF."""
    return (maps.rho * (1.0 - maps.ff)).astype(np.float32), (maps.rho * maps.ff).astype(np.float32)


def with_tissue_dominance(fit: EchoFit, labels: Volume, entropy: Volume, structures: list[str], max_entropy: float
                          ) -> tuple[EchoFit, str | None]:
    """``fit`` with the fat-dominant branch of a magnitude-only fit in the voxels that the calf segmentation
    ``labels`` gives to ``structures`` (``calf.water_fat.fat_dominant_structures``: subcutaneous fat and the bones,
    whose marrow is fat) with a normalised entropy ``entropy`` of the network's probabilities below ``max_entropy``,
    and the note for provenance (``fit`` itself and None when nothing applies).

    Magnitude images leave water/fat dominance open voxel by voxel: three echoes fit FF of about 80-95 % and its
    alias at 5-35 % equally well (:func:`pipeline.calf.waterfat.fit_magnitude`), and in-phase and opposed-phase
    images give FF or 1 - FF; subcutaneous fat and yellow marrow are nearly pure fat, so their branch is known from
    where they are. The entropy bound keeps it to voxels whose label the network is sure of (a
    muscle taken for subcutaneous fat would otherwise read as fat). Muscle voxels keep the branch the images chose: a
    muscle's FF is never decided by the segmentation.
    """
    if fit.maps.other_branch is None or not structures:
        return fit, None
    if not (labels.same_grid(fit.grid) and entropy.same_grid(fit.grid)):
        return fit, "water/fat dominance from the images alone: the calf labels are not on the fat-fraction map's grid"
    reg = registry("calf")
    ids = [lab.id for lab in reg.labels if lab.structure in structures]
    region = np.isin(np.asarray(labels.array), ids) & (np.asarray(entropy.array) < max_entropy)
    maps, n = with_fat_dominant(fit.maps, region)
    return replace(fit, maps=maps), (
        f"water/fat dominance: fat-dominant branch in the {n} fitted voxels of {', '.join(structures)} (calf "
        f"segmentation, normalised entropy < {max_entropy:g}) that the magnitude images had left water-dominant; "
        "muscles as the images decide")


def _fit_water_fat(study: StudyDir, write_maps: bool = True) -> tuple[dict[str, Any], EchoFit | None]:
    """:func:`fit_water_fat`, with the maps it computed from magnitude images (multi-echo or in-phase + opposed-phase)
    when it did; None for scanner water/fat, scanner FF maps and studies without a map. ``write_maps=False`` leaves
    the writing of computed maps to the caller (:func:`segment` writes them once, after the segmentation has decided
    the dominance of fat tissue); the map of scanner images is written at once."""
    series = study.series()
    cfg = load_config("default")["calf"]
    inputs = _water_fat_inputs(series, None)
    if inputs is not None and inputs.no_ff_reason:
        return {"status": inputs.no_ff_reason}, None
    if inputs is not None:
        inphase, ffmap = series.volume("calf_inphase"), series.volume("calf_ffmap")
        images = CalfImages(inputs.water, inputs.fat, load_volume(inphase) if inphase else None,
                            load_volume(ffmap) if ffmap else None)
        source = voxel_ff_source(images, cfg)
        if source is None:
            raise ValueError(images.no_ff_reason or "no water and fat images")
        ff = source.on()
        facts = {"status": "ff map", "method": f"{inputs.how}; {source.how}"}
        if not inputs.computed or source.method == "scanner":
            save_volume(inputs.water.with_array((100.0 * ff).astype(np.float32)), study.calf_ff_map)
            return facts, None
        # water-dominant 2-point FF = (IP - OP) / (2 IP); the fat-dominant reading of the same pair is 1 - FF
        ff = np.asarray(ff, np.float32)
        zeros = np.zeros_like(ff)
        maps = WaterFatMaps(ff, zeros, zeros, np.ones(ff.shape, bool), np.zeros(ff.shape, bool),
                            other_branch=(1.0 - ff, zeros, zeros))
        fit = EchoFit(inputs.water, maps, fitted=False)
        if write_maps:
            _save_echo_maps(study, fit)
        return facts, fit
    echoes = echo_set(study.root)
    if echoes is None or len(echoes.magnitudes) < 3:
        return {"status": "no calf series for a fat-fraction map"}, None
    wcfg = cfg.get("water_fat", {})
    field_t = echoes.chemical_shift_field_t or wcfg.get("default_field_strength_t")
    if not field_t:
        return {"status": "calf echoes without a field strength (add field_strength_t or imaging_frequency_mhz; "
                          "DICOM: MagneticFieldStrength or ImagingFrequency)"}, None
    ref = echoes.magnitudes[0]
    if any(not v.same_grid(ref) for v in [*echoes.magnitudes, *(echoes.phases or [])]):
        raise InternalError("calf echoes are not on one grid.")
    mags = np.stack([np.asarray(v.array, np.float32) for v in echoes.magnitudes], axis=-1)
    phases = None if echoes.phases is None else np.stack([np.asarray(v.array, np.float32) for v in echoes.phases], -1)
    start = time.perf_counter()
    maps = fit_echoes(mags, phases, echoes.echo_times_ms, float(field_t), wcfg)
    seconds = round(time.perf_counter() - start, 2)
    fit = EchoFit(ref, maps, inphase_echo=in_phase_echo(echoes, float(field_t), wcfg))
    if write_maps:
        _save_echo_maps(study, fit)
    t1_bias = t1_bias_statement(echoes.repetition_time_ms, echoes.flip_angle_deg, float(field_t), wcfg.get("t1_ms", {}))
    limits = [*maps.limits, *([t1_bias_limit(t1_bias)] if t1_bias is not None else [])]
    facts = {"method": maps.method, "echo_times_ms": echoes.echo_times_ms, "field_strength_t": float(field_t),
             "nominal_field_strength_t": echoes.field_strength_t, "imaging_frequency_mhz": echoes.imaging_frequency_mhz,
             "t1_weighting": t1_bias, "notes": maps.notes, "limits": limits, "fit_seconds": seconds}
    update_provenance(study.root, water_fat=facts, notes=[f"calf fat fraction: {maps.method}",
                                                          *[f"calf fat fraction limit: {x}" for x in limits]])
    return {"status": "fitted", **facts}, fit


def segment(study: StudyDir, models: Any, device: str = "cpu") -> dict[str, Any]:
    """Segment the calf muscles of ``study`` with the bundle of ``models`` (a bundle cache); returns facts for
    provenance. A fat-fraction map computed from magnitude images is written once, at the end, whatever becomes of the
    segmentation (with the dominance of fat tissue the segmentation decided, :func:`with_tissue_dominance`)."""
    fit_facts, echo_fit = _fit_water_fat(study, write_maps=False)
    try:
        facts, echo_fit = _segment(study, models, device, fit_facts, echo_fit)
    finally:
        if echo_fit is not None:
            _save_echo_maps(study, echo_fit)
    return facts


def _segment(study: StudyDir, models: Any, device: str, fit_facts: dict[str, Any], echo_fit: EchoFit | None
             ) -> tuple[dict[str, Any], EchoFit | None]:
    """:func:`segment` after the water-fat fit: its facts, and the computed maps as the segmentation leaves them."""
    inputs = calf_inputs(study.series(), study, echo_fit)
    if inputs is None:
        return {"status": NO_CALF, "ff_map": fit_facts["status"]}, echo_fit
    cfg = load_config("default")["segment"]
    bundle = models.get(calf_bundle_name(inputs, cfg))
    echo = echo_fit.inphase_echo if echo_fit is not None and inputs.how == MULTI_ECHO else None
    channels, how = network_inputs(bundle.metadata["input_channels"], inputs, study.series(), echo)
    classes, entropy = bundle.predict_entropy(channels, device=device)
    reg = registry("calf")
    try:
        labels, sides = sided_label_map(classes, reg, cfg["min_component_ml"])
    except BadInputError as exc:  # no leg, or legs whose sides the geometry cannot tell: the calf fails QC
        reason = f"the calf segmentation gave no usable leg: {exc}"
        study.calf_labels.unlink(missing_ok=True)
        write_json(study.calf_qc, {"status": "fail", "reasons": [reason], "checks": [], "structures": {}})
        update_provenance(study.root, models={"calf": bundle.provenance()}, notes=[f"calf: {reason}"])
        return {"status": "failed QC", "reason": reason}, echo_fit
    calf_cfg = load_config("default")["calf"]
    labels, folds = leave_out_slices(labels, channels, reg, calf_cfg)
    save_volume(labels, study.calf_labels, dtype=np.int16)
    write_label_tables(study, "calf")
    if echo_fit is not None:
        wf_cfg = calf_cfg.get("water_fat", {})
        echo_fit, dominance = with_tissue_dominance(echo_fit, labels, entropy,
                                                    list(wf_cfg.get("fat_dominant_structures", [])),
                                                    float(wf_cfg.get("fat_dominant_max_entropy", 0.2)))
        if dominance:
            update_provenance(study.root, water_fat={"dominance": dominance}, notes=[f"calf fat fraction: {dominance}"])
    legs = without_folds([(leg.side, leg.mask) for leg in sides.legs], folds, slice_axis(labels))
    write_json(study.calf_certainty, certainty_of(bundle, channels, classes, entropy, legs, reg.classes,
                                                  load_config("qc")["calf"], device))
    notes = [f"calf inputs: {inputs.how}; network input: {how}"] + [f"calf: {w}" for w in sides.warnings]
    update_provenance(study.root, models={"calf": bundle.provenance()},
                      notes=notes + [f"calf: {f.describe()}" for f in folds])
    return {"status": "segmented", "legs": [{"side": leg.side, "method": leg.method,
                                             "centroid_x_mm": round(float(leg.centroid_ras[0]), 2)}
                                            for leg in sides.legs], "inputs": inputs.how, "warnings": sides.warnings,
            "left_out": [f.describe() for f in folds]}, echo_fit


def leave_out_slices(labels: Volume, channels: list[Volume], reg: Registry, calf_cfg: dict[str, Any]
                     ) -> tuple[Volume, list[Fold]]:
    """The sided calf label map without the slices that are not this calf's or too dim to segment, and what was
    left out: folded-in anatomy at the distal end (:func:`pipeline.calf.extent.drop_distal_fold`), then the dim
    ends of the stack (:func:`pipeline.calf.extent.drop_dim_slab_ends`) in the total signal of the network's input
    ``channels`` (their sum: the in-phase signal of water and fat)."""
    labels, folds = drop_distal_fold(labels, reg, float(calf_cfg["fold_muscle_fraction"]),
                                     float(calf_cfg["fold_gastrocnemius_gap_fraction"]),
                                     float(calf_cfg["fold_gastrocnemius_return_fraction"]))
    total = np.asarray(channels[0].array, np.float32).copy()
    for c in channels[1:]:
        total += np.asarray(c.array, np.float32)
    labels, dim = drop_dim_slab_ends(labels, channels[0].with_array(total), reg,
                                     float(calf_cfg["slab_edge_signal_fraction"]),
                                     float(calf_cfg["slab_edge_body_fraction"]), folds)
    return labels, folds + dim


def calf_bundle_name(inputs: CalfInputs, cfg: dict[str, Any]) -> str:
    """The bundle of the ``segment`` configuration ``cfg`` for a study's calf inputs: ``calf_bundle`` for scanner
    water and fat images; ``calf_computed_water_fat_bundle`` when the pipeline computed them from magnitude images;
    ``calf_single_contrast_bundle`` for one anatomical series."""
    if not inputs.has_water_fat:
        return cfg["calf_single_contrast_bundle"]
    if inputs.computed:
        return cfg["calf_computed_water_fat_bundle"]
    return cfg["calf_bundle"]


def certainty_of(bundle: Any, channels: list[Volume], classes: Volume, entropy: Volume,
                 legs: list[tuple[str, np.ndarray]], class_names: tuple[str, ...] | list[str], qc_cfg: dict[str, Any],
                 device: str) -> dict[str, dict[str, dict[str, float]]]:
    """The network's certainty per structure and leg, as ``calf/certainty.json`` holds it (measure -> side ->
    structure -> value): the mean normalised entropy, and the flip agreement unless ``qc_cfg['flip_check']`` is
    off.

    The entropy is named for what it measures: ``entropy`` of one network pass, ``mirrored_entropy`` of the mean of
    the passes of a bundle that averages over mirror images (:func:`averages_mirrors`), which adds the passes'
    disagreement to each pass's own uncertainty and is judged against its own thresholds
    (:func:`pipeline.calf.qc.judge_calf`)."""
    key = "mirrored_entropy" if averages_mirrors(bundle) else "entropy"
    out = {key: structure_means(np.asarray(entropy.array), np.asarray(classes.array), legs, class_names)}
    if qc_cfg["flip_check"]:
        out["flip_dice"] = flip_check(bundle, channels, classes, legs, class_names,
                                      int(qc_cfg["flip_check_every_nth_slice"]), device)
    return out


def averages_mirrors(bundle: Any) -> bool:
    """Whether ``bundle`` averages its probabilities over mirror images of each slice (``metadata.json``
    ``inference.mirror_axes``; :func:`pipeline.segment.infer.iter_outputs`)."""
    return bool(bundle.metadata.get("inference", {}).get("mirror_axes"))


def certainty_by_side(certainty: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`certainty_of`'s measure -> side -> structure -> value as :func:`judge_calf` takes it (side ->
    structure -> measure -> value).

    >>> certainty_by_side({"entropy": {"left": {"soleus": 0.1}}, "flip_dice": {"left": {"soleus": 0.9}}})
    {'left': {'soleus': {'entropy': 0.1, 'flip_dice': 0.9}}}
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for measure, per_side in certainty.items():
        for side, per in per_side.items():
            for name, value in per.items():
                out.setdefault(side, {}).setdefault(name, {})[measure] = value
    return out


def flip_check(bundle: Any, channels: list[Volume], classes: Volume, legs: list[tuple[str, np.ndarray]],
               class_names: tuple[str, ...] | list[str], every: int, device: str) -> dict[str, dict[str, float]]:
    """Test-time flip agreement (:func:`flip_agreement`) on every ``every``-th axial slice: the network's classes of
    the left-right mirrored image, mirrored back, against its classes of the image. The Dice per structure of a
    systematic subset of slices estimates that of all slices at 1/``every`` of the cost of a second pass.

    A bundle that averages its output over mirror images (``metadata.json`` ``inference.mirror_axes``) gives the
    mirrored image the mirror of its answer by construction, so its agreement would read 1 whatever the network
    knows; for such a bundle both sides of the comparison are single passes without the averaging."""
    axis = slice_axis(classes)
    take: list[Any] = [slice(None)] * 3
    take[axis] = slice(None, None, every)
    sub = tuple(take)
    averaged = averages_mirrors(bundle)

    def subset(v: Volume, mirrored: bool) -> Volume:
        affine = v.affine.copy()
        affine[:3, axis] *= every
        array = np.asarray(v.array)[sub]
        return Volume(np.ascontiguousarray(array[::-1] if mirrored else array), affine, dict(v.meta))

    mirrored = bundle.predict([subset(v, True) for v in channels], device=device, mirror=not averaged)
    plain = (np.asarray(bundle.predict([subset(v, False) for v in channels], device=device, mirror=False).array)
             if averaged else np.asarray(classes.array)[sub])
    return flip_agreement(plain, np.asarray(mirrored.array)[::-1], [(side, mask[sub]) for side, mask in legs],
                          class_names)


def in_phase_echo(echoes: EchoSet, field_t: float, cfg: dict[str, Any]) -> tuple[Volume, str] | None:
    """The first acquired echo of a multi-echo calf acquisition at which the main fat peak is in phase with water
    (:func:`pipeline.calf.waterfat.echo_phase_label` from its echo time and ``field_t``, the field that sets the
    chemical shift; never from names), with a description; None when no echo is. ``cfg``: ``calf.water_fat``."""
    tolerance, spectrum = float(cfg.get("echo_phase_tolerance_deg", 30.0)), spectrum_from_config(cfg)
    for te, volume in zip(echoes.echo_times_ms, echoes.magnitudes):
        if echo_phase_label(te, field_t, tolerance, spectrum) == "in":
            return volume, f"in-phase echo (TE {te:g} ms) of the multi-echo acquisition"
    return None


def network_inputs(names: list[str], inputs: CalfInputs, series: SeriesIndex,
                   echo: tuple[Volume, str] | None = None) -> tuple[list[Volume], str]:
    """The images a calf bundle takes, by its ``input_channels``: ``water`` and ``fat`` (Dixon bundles), or one
    ``image`` of any contrast (contrast-randomised bundles): an acquired image where the study has one, the in-phase
    image, else ``echo`` (the in-phase echo of a multi-echo acquisition, :func:`in_phase_echo`), else the sum of
    water and fat (which is the in-phase signal, but of a fit: on the real three-echo calf study the network reads
    it worse than the acquired in-phase echo, mean Dice of GM/GL/SOL against the reference annotation 0.69 / 0.82
    against 0.75 / 0.88 for the left / right leg); else the anatomical image."""
    if list(names) == ["image"]:
        inphase = series.volume("calf_inphase")
        if inphase is not None:
            return [load_volume(inphase)], "in-phase image"
        if echo is not None and inputs.water is not None and echo[0].same_grid(inputs.water):
            return [echo[0]], echo[1]
        if inputs.water is None or inputs.fat is None:
            assert inputs.anatomical is not None
            return [inputs.anatomical], f"anatomical image ({inputs.anatomical_role})"
        w, f = np.asarray(inputs.water.array, np.float32), np.asarray(inputs.fat.array, np.float32)
        return [inputs.water.with_array(w + f)], "water + fat (in-phase signal)"
    if not inputs.has_water_fat:
        raise InternalError(f"calf bundle with inputs {list(names)} given a study without water and fat images.")
    by_name = {"water": inputs.water, "fat": inputs.fat}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InternalError(f"calf bundle asks for input channels {missing} that no calf driver provides.")
    return [by_name[n] for n in names], "Dixon water and fat"


def unavailable_summary(reason: str) -> Summary:
    """The calf section of a study without calf measurements: every key the rules read, null with ``reason``."""
    reg = registry("calf")
    s = Summary()
    s.set("calf.available", False)
    s.set_null("calf.legs_present", reason)
    for side in ("left", "right"):
        for name in (*reg.muscles, *reg.groups()):
            for key in KEY_METRICS:
                s.set_null(f"calf.{side}.{name}.{key}", reason)
        s.set_null(f"calf.{side}.girth_max_mm", reason)
    s.set_null("calf.asymmetry.girth_diff_cm", reason)
    return s


def _images(series: SeriesIndex, inputs: CalfInputs, labels: Volume) -> CalfImages:
    """The images the calf measurements read, checked to lie on the grid of the label map."""
    inphase, ffmap = series.volume("calf_inphase"), series.volume("calf_ffmap")
    no_ff = inputs.no_ff_reason if inputs.has_water_fat else NO_FF.format(role=inputs.anatomical_role)
    images = CalfImages(inputs.water, inputs.fat, load_volume(inphase) if inphase else None,
                        load_volume(ffmap) if ffmap and inputs.has_water_fat else None, no_ff_reason=no_ff)
    for v in (images.water, images.fat, images.inphase, images.ffmap, inputs.anatomical):
        if v is not None and not v.same_grid(labels):
            raise InternalError("calf input volumes are not on the grid of calf/labels.nii.gz.")
    return images


def measure(study: StudyDir) -> dict[str, Any]:
    """Measure the calf of ``study``; returns facts for provenance."""
    series = study.series()
    inputs = calf_inputs(series, study)
    if inputs is None or not study.calf_labels.exists():
        reason = "no calf series in the study" if inputs is None else "calf not segmented (no calf/labels.nii.gz)"
        summary = unavailable_summary(reason)
        failed = study.read_json(study.calf_qc, {}) if inputs is not None else {}
        if failed.get("status") == "fail":
            summary = unavailable_summary(join_reasons(failed["reasons"]))
            summary.set("calf.qc_status", "fail")
            summary.set("calf.qc_reasons", join_reasons(failed["reasons"]))
        update_summary_section(study.root, "calf", summary)
        return {"status": reason}
    labels = load_volume(study.calf_labels)
    reg = registry("calf")
    res = measure_calf_labels(labels, _images(series, inputs, labels), reg, load_config("default")["calf"])
    qc = judge_calf(labels, reg, load_config("qc")["calf"], _certainty(study))
    left_out = study.read_json(study.segment_record, {}).get("calf", {}).get("left_out", [])
    for warning in [*inputs.warnings, *left_out]:
        qc.add_study_reason(REVIEW, warning)
    for key, value in qc.as_summary().items():
        res.summary.set(key, value)
    write_json(study.calf_qc, {"status": qc.status, "reasons": qc.reasons, "checks": qc.checks,
                               "structures": {side: {n: {"status": q.status, "reasons": q.reasons}
                                                     for n, q in structs.items()}
                                              for side, structs in qc.structures.items()}})
    # each row carries the QC verdict that decides its use: its structure's (a group's members'), fail when the
    # study failed
    members = reg.members()
    rows = [{**row, "qc_status": group_verdict([qc.structure_status(row["side"], m)
                                                for m in members.get(row["structure"], ())], study=qc.status) or ""}
            for row in res.rows + _ff_map_rows(study, labels)]
    write_text(study.calf_measurements, csv_text(rows, MEASUREMENT_COLUMNS))
    # the leg outline rests on the whole segmentation: the study's verdict
    write_text(study.calf_legs, csv_text([{**row, "qc_status": qc.status} for row in res.legs], LEG_COLUMNS))
    asym = [{**row, "qc_status": group_verdict([qc.structure_status(side, m) for side in ("left", "right")
                                                for m in members.get(row["structure"], ())], study=qc.status) or ""}
            for row in res.asymmetry]
    write_text(study.calf_asymmetry, csv_text(asym, ASYMMETRY_COLUMNS))
    slices = [{**row, "qc_status": group_verdict([qc.structure_status(row["side"], m)
                                                  for m in members.get(row["muscle"], ())], study=qc.status)
               or qc.status} for row in res.slices]
    write_text(study.calf_slices, csv_text(slices, SLICE_COLUMNS))
    update_summary_section(study.root, "calf", res.summary)
    update_provenance(study.root, notes=[f"calf inputs: {inputs.how}", *[f"calf: {n}" for n in res.notes]])
    return {"status": "measured", "legs": res.summary.get("calf.legs_present"), "qc_status": qc.status}


def _certainty(study: StudyDir) -> dict[str, dict[str, dict[str, float]]]:
    """The segment stage's flip agreement and entropy as :func:`judge_calf` takes them (side -> structure -> measure
    -> value; empty when not measured)."""
    return certainty_by_side(study.read_json(study.calf_certainty, {}))


def _ff_map_rows(study: StudyDir, labels: Volume) -> list[dict[str, Any]]:
    """Whole-muscle mean and median and eroded-core median FF of each muscle and side from ``calf/ff_map.nii.gz``."""
    if not study.calf_ff_map.exists():
        return []
    ff = load_volume(study.calf_ff_map)
    if not ff.same_grid(labels):
        raise InternalError("calf/ff_map.nii.gz is not on the grid of calf/labels.nii.gz.")
    reg = registry("calf")
    names = {reg.sided_id(m, side): (side, m) for m in reg.muscles for side in ("left", "right")}
    axis = slice_axis(labels)
    pixel = tuple(float(s) for a, s in enumerate(labels.spacing_mm) if a != axis)
    return structure_ff_rows(labels.array, ff.array, names, axis, (pixel[0], pixel[1]),
                             float(load_config("default")["calf"].get("ff_erode_mm", 0.0)))
