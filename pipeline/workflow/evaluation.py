"""``legmri evaluate``: the shipped bundles on fresh phantoms (seeds never used in training).

calf: Dice per structure and side between predicted and true label maps, side swaps, and the measurement errors
that follow from the predicted labels (volume %, FF pp) for every muscle.
spine: level naming, DSCA / AP diameter / lateral recess errors and side swaps from predicted label maps.
Writes ``<out>/<anatomy>_cases.csv`` (one row per case and structure) and ``<out>/<anatomy>_summary.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import write_text
from pipeline.core.config import load_config
from pipeline.core.errors import EXIT_OK, UsageError
from pipeline.core.labels import Registry, registry
from pipeline.core.tables import csv_text
from pipeline.core.verdict import join_reasons
from pipeline.segment.bundle import load_bundle
from pipeline.segment.train import dice_per_class
from pipeline.workflow.training import EVALUATION_SEED_START


def parse_seeds(text: str) -> list[int]:
    """``"1000-1019"`` or ``"5,9,12"`` -> list of seeds.

    >>> parse_seeds("3-5"), parse_seeds("7,9")
    ([3, 4, 5], [7, 9])
    """
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    if not out:
        raise UsageError(f"no seeds in '{text}'; use e.g. 100000-100019")
    return out


def evaluate(anatomy: str, seeds: str, out: Path, device: str = "cpu", generator: str = "project",
             contrasts: str | None = None, bundle: str | None = None, qc: bool = False, axial_only: bool = False
             ) -> int:
    """Evaluate a bundle of ``anatomy`` (the configured one unless ``bundle``) on the phantoms of ``seeds``; write
    the per-case table and the summary table into ``out`` and print the summary.

    Calf: with the default project generator and the configured Dixon bundle, the full evaluation (Dice, side swaps,
    volume and FF errors; :func:`evaluate_calf`); with ``generator="atlas"`` (the independent generator, never
    trained on), ``contrasts``, a one-input ``bundle`` or ``qc``, Dice per input contrast and, with ``qc``, the
    segmentation QC verdicts against the truth (:func:`calf_generalisation`). Spine: ``bundle`` or the configured
    one (:func:`evaluate_spine`; with ``qc`` the level QC verdicts against the truth); with ``axial_only`` the
    phantoms' sagittal image is left out (:func:`evaluate_spine_axial_only`)."""
    seed_list = parse_seeds(seeds)
    if generator == "project" and min(seed_list) < EVALUATION_SEED_START:
        raise UsageError(f"evaluation seeds must be >= {EVALUATION_SEED_START} (lower seeds are used in training).")
    out = Path(out)
    if anatomy == "calf" and (generator != "project" or contrasts or bundle or qc):
        rows, table = calf_generalisation(bundle or load_config("default")["segment"]["calf_bundle"], generator,
                                          seed_list, (contrasts or "dixon,inphase,anatomical").split(","), device,
                                          qc)
    elif anatomy == "calf":
        rows, table = evaluate_calf(seed_list, device)
    elif anatomy == "spine" and axial_only:
        rows, table = evaluate_spine_axial_only(seed_list, device, bundle, generator, qc)
    elif anatomy == "spine":
        rows, table = evaluate_spine(seed_list, device, bundle, generator, qc)
    else:
        raise UsageError(f"unknown anatomy '{anatomy}'")
    write_text(out / f"{anatomy}_cases.csv", csv_text(rows, list(rows[0].keys())))
    write_text(out / f"{anatomy}_summary.md", table)
    print(table)
    return EXIT_OK


CONTRAST_ROLES = {"inphase": "calf_inphase", "outphase": "calf_outphase", "water": "calf_water",
                  "anatomical": "calf_anatomical"}


def _phantom(generator: str, seed: int) -> Any:
    """The phantom of ``seed`` from the project's generator or the independent atlas generator."""
    if generator == "atlas":
        from pipeline.synth.calf_atlas import generate_atlas_calf

        return generate_atlas_calf(None, seed)
    if generator != "project":
        raise UsageError(f"unknown phantom generator '{generator}' (project or atlas)")
    from pipeline.synth.calf import CalfSpec, generate_calf

    return generate_calf(CalfSpec.random(np.random.default_rng(seed)), seed=seed)


def _contrast_inputs(bundle: Any, ph: Any, contrast: str) -> list[Any] | None:
    """The channels ``bundle`` gets for ``contrast``: water + fat for two-input bundles (``dixon`` only); for
    one-input bundles the named image, with ``dixon`` meaning the in-phase signal water + fat. None when the
    phantom has no such image or the bundle cannot take it."""
    if bundle.metadata["input_channels"] == ["water", "fat"]:
        return [ph.volume("calf_water"), ph.volume("calf_fat")] if contrast == "dixon" else None
    if contrast == "dixon":
        w, f = ph.volume("calf_water"), ph.volume("calf_fat")
        return [w.with_array(np.asarray(w.array, np.float32) + np.asarray(f.array, np.float32))]
    if contrast not in CONTRAST_ROLES:
        raise UsageError(f"unknown contrast '{contrast}' (dixon, {', '.join(CONTRAST_ROLES)})")
    try:
        return [ph.volume(CONTRAST_ROLES[contrast])]
    except StopIteration:
        return None


#: A structure segmented with a Dice under this is "wrong" when the segmentation QC is judged against the truth
#: (the issue's bar for the smaller calf muscles on phantoms the network was not trained on).
QC_WRONG_DICE = 0.8


def calf_generalisation(bundle_name: str, generator: str, seeds: list[int], contrasts: list[str],
                        device: str = "cpu", qc: bool = False) -> tuple[list[dict[str, Any]], str]:
    """Dice per seed, input contrast, side and structure of a calf bundle on phantoms of ``generator``, and the
    summary table (mean Dice per structure and contrast, side swaps). Sides come from world x as in the pipeline; a
    side swap is counted when a structure overlaps the other side's truth better than its own (Dice < 0.5).

    With ``qc`` each case also runs the segmentation QC of ``legmri run`` (entropy, flip agreement, anatomy;
    ``configs/qc.yaml``) and the rows carry each structure's verdict, so that the summary can say how often QC
    passed a wrong structure (Dice < :data:`QC_WRONG_DICE`) and how often it held back a right one."""
    from pipeline.calf.legs import sided_label_map

    bundle = load_bundle(bundle_name, device=device)
    reg = registry("calf")
    min_ml = load_config("default")["segment"]["min_component_ml"]
    rows: list[dict[str, Any]] = []
    swaps = 0
    for seed in seeds:
        ph = _phantom(generator, seed)
        truth = np.asarray(ph.labels.array)
        for contrast in contrasts:
            chans = _contrast_inputs(bundle, ph, contrast)
            if chans is None:
                continue
            if qc:
                labels, verdict = _segment_and_judge(bundle, chans, reg, min_ml, device)
            else:
                labels, _ = sided_label_map(bundle.predict(chans, device=device), reg, min_ml)
                verdict = None
            pred = np.asarray(labels.array)
            ids = np.arange(len(reg.labels) + 1)
            dice = dice_per_class(pred, truth, len(ids))
            for side, other in (("left", "right"), ("right", "left")):
                for name in reg.classes[1:]:
                    d = dice[reg.sided_id(name, side)]
                    if d is None:
                        continue
                    cross = dice_per_class(pred == reg.sided_id(name, side), truth == reg.sided_id(name, other),
                                           2)[1]
                    swaps += int(cross is not None and cross > d and d < 0.5)
                    row = {"seed": seed, "contrast": contrast, "side": side, "structure": name, "dice": round(d, 4)}
                    if verdict is not None:
                        judged = verdict.structures.get(side, {}).get(name)
                        row |= {"qc_status": verdict.structure_status(side, name), "study_qc_status": verdict.status,
                                "qc_reasons": join_reasons(judged.reasons) if judged is not None else ""}
                    rows.append(row)
    used = [c for c in contrasts if any(r["contrast"] == c for r in rows)]
    if not used:
        raise UsageError(f"{bundle.name} takes {' + '.join(bundle.metadata['input_channels'])}: none of the contrasts "
                         f"{', '.join(contrasts)} can be given to it; evaluate it with --contrasts dixon, or name a "
                         "one-input bundle with --bundle (e.g. the configured segment.calf_single_contrast_bundle)")
    left_out = [c for c in contrasts if c not in used]
    lines = [f"Calf bundle {bundle.name} v{bundle.metadata['version']} on {generator} phantoms, seeds "
             f"{seeds[0]}-{seeds[-1]}; side swaps: {swaps}. Mean Dice per input contrast"
             + (f" (not evaluated: {', '.join(left_out)}, which the bundle cannot take)." if left_out else "."), "",
             "| structure | " + " | ".join(used) + " |", "|---|" + "---|" * len(used)]
    for name in reg.classes[1:]:
        means = [np.mean([r["dice"] for r in rows if r["structure"] == name and r["contrast"] == c] or [np.nan])
                 for c in used]
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    if qc:
        lines += ["", qc_against_truth(rows, reg.muscles)]
    return rows, "\n".join(lines) + "\n"


def _segment_and_judge(bundle: Any, chans: list[Any], reg: Registry, min_ml: float, device: str) -> tuple[Any, Any]:
    """The sided label map and the calf QC verdict of ``legmri run``'s segment and measure stages for ``chans``."""
    from pipeline.calf.legs import sided_label_map
    from pipeline.calf.qc import judge_calf
    from pipeline.workflow.calf import certainty_by_side, certainty_of

    classes, entropy = bundle.predict_entropy(chans, device=device)
    labels, sides = sided_label_map(classes, reg, min_ml)
    qc_cfg = load_config("qc")["calf"]
    legs = [(leg.side, leg.mask) for leg in sides.legs]
    certainty = certainty_of(bundle, chans, classes, entropy, legs, reg.classes, qc_cfg, device)
    return labels, judge_calf(labels, reg, qc_cfg, certainty_by_side(certainty))


def qc_against_truth(rows: list[dict[str, Any]], structures: tuple[str, ...] | list[str]) -> str:
    """How the per-structure QC verdicts of ``rows`` (muscles in ``structures``) stand against the truth: for each
    verdict, the structures with Dice >= :data:`QC_WRONG_DICE` (right) and under it (wrong); and the muscles whose
    values reach the rules (the structure passed or is under review in a study whose calf QC did not fail,
    :mod:`pipeline.rules.qc_gate`), with how many of them are wrong: the confident wrong numbers the QC exists to
    prevent.

    >>> rows = [{"structure": "soleus", "dice": 0.5, "qc_status": "pass", "study_qc_status": "review"},
    ...         {"structure": "soleus", "dice": 0.6, "qc_status": "pass", "study_qc_status": "fail"}]
    >>> print(qc_against_truth(rows, ["soleus"]))
    QC verdicts against the truth (muscles; wrong = Dice < 0.8): 2 passed (2 wrong), 0 review (0 wrong), 0 fail (0 wrong); muscles whose values reach the rules: 1 (1 wrong).
    """
    mus = [r for r in rows if r["structure"] in structures and "qc_status" in r]
    return (f"QC verdicts against the truth (muscles; wrong = Dice < {QC_WRONG_DICE}): "
            + verdict_counts(mus, lambda r: r["dice"] < QC_WRONG_DICE, "muscles") + ".")


def verdict_counts(rows: list[dict[str, Any]], wrong: Callable[[dict[str, Any]], bool], what: str) -> str:
    """Per QC verdict (``qc_status``) the rows and how many of them are ``wrong``; then the rows whose values reach
    the rules (not failed, in a study, ``study_qc_status``, that did not fail; :mod:`pipeline.rules.qc_gate`) and
    how many of those are wrong.

    >>> rows = [{"qc_status": "pass", "study_qc_status": "review", "x": 1}, {"qc_status": "fail", "x": 0}]
    >>> verdict_counts(rows, lambda r: r["x"] == 1, "levels")
    '1 passed (1 wrong), 0 review (0 wrong), 1 fail (0 wrong); levels whose values reach the rules: 1 (1 wrong)'
    """
    used = [r for r in rows if r["qc_status"] != "fail" and r.get("study_qc_status") != "fail"]
    return per_verdict(rows, wrong) + f"; {what} whose values reach the rules: {len(used)} ({sum(map(wrong, used))} wrong)"


def per_verdict(rows: list[dict[str, Any]], wrong: Callable[[dict[str, Any]], bool]) -> str:
    """Per QC verdict (``qc_status``; rows judged by none are left out) the rows and how many of them are ``wrong``.

    >>> per_verdict([{"qc_status": "pass", "x": 1}, {"qc_status": "", "x": 1}], lambda r: r["x"] == 1)
    '1 passed (1 wrong), 0 review (0 wrong), 0 fail (0 wrong)'
    """
    parts = []
    for status in ("pass", "review", "fail"):
        sel = [r for r in rows if r["qc_status"] == status]
        parts.append(f"{len(sel)} {'passed' if status == 'pass' else status} ({sum(map(wrong, sel))} wrong)")
    return ", ".join(parts)


def _registry_config_bundle(anatomy: str, device: str, name: str | None = None
                            ) -> tuple[Registry, dict[str, Any], Any]:
    """The label registry of ``anatomy``, the pipeline configuration and the bundle ``name`` (default: the configured
    one) on ``device``."""
    cfg = load_config("default")
    return registry(anatomy), cfg, load_bundle(name or cfg["segment"][f"{anatomy}_bundle"], device=device)


def evaluate_calf(seeds: list[int], device: str = "cpu") -> tuple[list[dict[str, Any]], str]:
    """Per case and structure: Dice, side swaps, volume and FF errors of the calf bundle; and the summary table."""
    from pipeline.calf.legs import sided_label_map
    from pipeline.calf.measure import CalfImages, measure_calf_labels
    from pipeline.synth.calf import MUSCLES, CalfSpec, generate_calf

    reg, cfg, bundle = _registry_config_bundle("calf", device)
    rows: list[dict[str, Any]] = []
    swaps = 0
    t_pred = []
    for seed in seeds:
        spec = CalfSpec.random(np.random.default_rng([seed, 1]))
        ph = generate_calf(spec, seed=seed)
        water, fat = ph.volume("calf_water"), ph.volume("calf_fat")
        t0 = time.perf_counter()
        classes = bundle.predict([water, fat], device=device)
        t_pred.append(time.perf_counter() - t0)
        pred, sides = sided_label_map(classes, reg, cfg["segment"]["min_component_ml"])
        truth = ph.labels
        if sorted(sides.sides) != sorted(spec.legs):
            swaps += 1
        ids = np.arange(len(reg.labels) + 1)
        dice = dice_per_class(np.asarray(pred.array), np.asarray(truth.array), len(ids))
        images = CalfImages(water, fat, ph.volume("calf_inphase"))
        m_pred = measure_calf_labels(pred, images, reg, cfg["calf"]).summary
        m_true = measure_calf_labels(truth, images, reg, cfg["calf"]).summary
        for side in spec.legs:
            # a swap: this side's truth overlaps the other side's prediction better than its own
            other = "left" if side == "right" else "right"
            for name in reg.classes[1:]:
                d = dice[reg.sided_id(name, side)]
                if d is None:
                    continue
                d_other = dice_per_class(np.asarray(pred.array) == reg.sided_id(name, other),
                                         np.asarray(truth.array) == reg.sided_id(name, side), 2)[1]
                if d_other is not None and d_other > d and d_other > 0.5:
                    swaps += 1
                row = {"seed": seed, "vendor": spec.vendor, "in_plane_mm": round(spec.in_plane_mm, 2),
                       "slice_mm": spec.slice_mm, "legs": "+".join(spec.legs), "side": side, "structure": name,
                       "dice": round(d, 4)}
                if name in MUSCLES:
                    row.update(_muscle_errors(ph.truth["muscles"][side][name], m_true, m_pred, f"calf.{side}.{name}"))
                rows.append(row)
    header = (f"Calf bundle {bundle.name} v{bundle.metadata['version']} on {len(seeds)} fresh phantoms "
              f"(seeds {seeds[0]}-{seeds[-1]}); side swaps: {swaps}; prediction {np.mean(t_pred):.2f} s/study "
              f"(mean, {device}). Volume and FF errors: measured on the predicted labels minus the phantom's "
              "analytic truth.")
    return rows, _calf_table(rows, reg, header)


def _muscle_errors(truth_m: dict[str, Any], m_true: Any, m_pred: Any, key: str) -> dict[str, Any]:
    """Volume and FF of a muscle measured on the predicted labels, against the phantom's analytic truth (end to
    end) and against the same measurement on the true label map (the part of the error due to the segmentation
    alone); ``key`` is the summary prefix ``calf.<side>.<muscle>``."""
    v_a, f_a = truth_m["volume_ml"], truth_m["ff_pct"]
    v_t, v_p = m_true.get(f"{key}.volume_ml"), m_pred.get(f"{key}.volume_ml")
    f_t, f_p = m_true.get(f"{key}.ff_pct"), m_pred.get(f"{key}.ff_pct")
    return {"true_volume_ml": v_a, "true_ff_pct": f_a, "volume_ml": v_p, "ff_pct": f_p,
            "volume_err_pct": None if v_p is None else round(100 * (v_p - v_a) / v_a, 3),
            "ff_err_pp": None if f_p is None or f_a is None else round(f_p - f_a, 3),
            "volume_err_pct_vs_true_labels": None if not v_t or v_p is None else round(100 * (v_p - v_t) / v_t, 3),
            "ff_err_pp_vs_true_labels": None if f_t is None or f_p is None else round(f_p - f_t, 3)}


def _calf_table(rows: list[dict[str, Any]], reg: Registry, header: str) -> str:
    """The markdown summary of the calf evaluation: per structure and side, Dice and measurement errors."""
    lines = [header, "",
             "| structure | side | mean Dice | min Dice | volume error % mean / max abs | FF error pp mean / max abs | n |",
             "|---|---|---|---|---|---|---|"]
    for name in reg.classes[1:]:
        for side in ("left", "right"):
            sel = [r for r in rows if r["structure"] == name and r["side"] == side]
            if not sel:
                continue
            ve = [abs(r["volume_err_pct"]) for r in sel if r.get("volume_err_pct") is not None]
            fe = [abs(r["ff_err_pp"]) for r in sel if r.get("ff_err_pp") is not None]
            vtxt = f"{np.mean(ve):.2f} / {np.max(ve):.2f}" if ve else "-"
            ftxt = f"{np.mean(fe):.2f} / {np.max(fe):.2f}" if fe else "-"
            lines.append(f"| {name} | {side} | {np.mean([r['dice'] for r in sel]):.3f} | "
                         f"{np.min([r['dice'] for r in sel]):.3f} | {vtxt} | {ftxt} | {len(sel)} |")
    return "\n".join(lines) + "\n"


#: DSCA bars (mm2, fraction) of the spine evaluation: the project's phantoms, and the independent atlas phantoms
DSCA_BARS = {"project": (8.0, 0.08), "atlas": (10.0, 0.10)}


def _lumbar_phantom(generator: str, seed: int) -> Any:
    """The lumbar phantom of ``seed`` from the project's generator or the independent atlas generator."""
    if generator == "atlas":
        from pipeline.synth.lumbar_atlas import generate_atlas_lumbar

        return generate_atlas_lumbar(seed)
    if generator != "project":
        raise UsageError(f"unknown phantom generator '{generator}' (project or atlas)")
    from pipeline.synth.lumbar import random_lumbar

    return random_lumbar(seed)


def evaluate_spine(seeds: list[int], device: str = "cpu", bundle_name: str | None = None,
                   generator: str = "project", qc: bool = False) -> tuple[list[dict[str, Any]], str]:
    """Per case and level: level naming and canal measurement errors of the spine bundle (the configured one unless
    ``bundle_name``) on the phantoms of ``generator`` (the project's, or the independent atlas generator of
    :mod:`pipeline.synth.lumbar_atlas`); and the summary table. The levels of a case are right when every lumbar
    disc is found and named within 8 mm of its true centre (discs above L1-L2 may be in view and go unnamed).

    With ``qc`` each case also runs the spine QC of ``legmri run`` (:func:`pipeline.spine.qc.judge_spine`, with the
    network's sac probability) and the rows carry each level's verdict and the study's, so that the summary can say
    how many levels whose values reach the rules are wrong (:func:`spine_qc_against_truth`)."""
    from pipeline.io.nifti import to_closest_canonical
    from pipeline.spine.measure import measure_levels
    from pipeline.spine.qc import judge_spine
    from pipeline.workflow.spine import configured_level_bundle, segment_series

    reg, cfg, bundle = _registry_config_bundle("spine", device, bundle_name)
    level_bundle = configured_level_bundle(lambda name: load_bundle(name, device=device))
    rows: list[dict[str, Any]] = []
    levels_ok = 0
    swaps = 0
    for seed in seeds:
        ph = _lumbar_phantom(generator, seed)
        spec = ph.spec
        vols = [to_closest_canonical(s.volume)[0] for s in ph.series]
        seg = segment_series(bundle, vols[0], vols[1:], device=device, level_bundle=level_bundle)
        levels = seg.levels
        measured = measure_levels(levels, seg.axials, reg, cfg["spine"], load_config("innervation"),
                                  sac_sag=seg.sac_sag)
        s = measured.summary
        verdict = judge_spine(levels.labels, reg, load_config("qc")["spine"], levels.flags, s.values,
                              inferred=levels.inferred, sac_probability=seg.sac_sag,
                              ap_views=measured.ap_views) if qc else None
        ok = all(lv in levels.discs and np.linalg.norm(levels.discs[lv].center_ras - np.array(t["disc_center_ras"]))
                 < 8.0 for lv, t in ph.truth["levels"].items())
        levels_ok += ok
        for lv, t in ph.truth["levels"].items():
            row = {"seed": seed, "level": lv, "levels_ok": ok, "axial": lv in spec.ax_levels,
                   "dsca_true": t["dsca_mm2"], "dsca": s.get(f"spine.{lv}.dsca_mm2"),
                   "ap_true": t["ap_diameter_mm"], "ap": s.get(f"spine.{lv}.ap_diameter_mm")}
            for side in ("left", "right"):
                row[f"recess_{side}_true"] = t["lateral_recess_depth_mm"][side]
                row[f"recess_{side}"] = s.get(f"spine.{lv}.{side}.lateral_recess_depth_mm")
            if verdict is not None:
                judged = verdict.levels.get(lv)
                row |= {"qc_status": judged.status if judged is not None else "", "study_qc_status": verdict.status,
                        "qc_reasons": join_reasons(judged.reasons) if judged is not None else ""}
            rl, rr = row["recess_left"], row["recess_right"]
            tl, tr = row["recess_left_true"], row["recess_right_true"]
            if None not in (rl, rr) and abs(tl - tr) > 1.5 and (rl - rr) * (tl - tr) < 0:
                swaps += 1
            rows.append(row)

    def err(key: str, true_key: str, bar: Callable[[float], float], axial: bool | None = None) -> str:
        return _errors([r for r in rows if axial in (None, r["axial"])], key, true_key, bar)

    bar_mm2, bar_frac = DSCA_BARS[generator]
    counted_on = ("" if level_bundle is None else
                  f" (levels counted on {level_bundle.name} v{level_bundle.metadata['version']})")
    which = ("fresh lumbar phantoms" if generator == "project"
             else "independent atlas lumbar phantoms (never trained on)")
    table = "\n".join([
        f"Spine bundle {bundle.name} v{bundle.metadata['version']}{counted_on} on {len(seeds)} {which} (seeds "
        f"{seeds[0]}-{seeds[-1]}): levels right in {levels_ok}/{len(seeds)}; recess side swaps: {swaps}.", "",
        "| measure | mean abs error | max abs error | within the bar |", "|---|---|---|---|",
        f"| DSCA (mm2; bar {bar_mm2:g} mm2 or {100 * bar_frac:g} %) | "
        f"{err('dsca', 'dsca_true', lambda t: dsca_tolerance_mm2(t, (bar_mm2, bar_frac)))} |",
        f"| AP diameter (mm; bar 1 mm) | {err('ap', 'ap_true', lambda t: 1.0)} |",
        f"| - on axial slices | {err('ap', 'ap_true', lambda t: 1.0, axial=True)} |",
        f"| - on the sagittal image only | {err('ap', 'ap_true', lambda t: 1.0, axial=False)} |",
        f"| lateral recess left (mm; bar 1 mm) | {err('recess_left', 'recess_left_true', lambda t: 1.0)} |",
        f"| lateral recess right (mm; bar 1 mm) | {err('recess_right', 'recess_right_true', lambda t: 1.0)} |"]) + "\n"
    if qc:
        table += "\n" + spine_qc_against_truth(rows, DSCA_BARS[generator]) + "\n"
    return rows, table


#: a disc found within this distance (mm) of a true disc centre is that disc (as for the levels of evaluate_spine)
DISC_MATCH_MM = 8.0


def evaluate_spine_axial_only(seeds: list[int], device: str = "cpu", bundle_name: str | None = None,
                              generator: str = "project", qc: bool = False) -> tuple[list[dict[str, Any]], str]:
    """The spine bundle on the phantoms' axial stacks alone, their sagittal image left out (the path of a study
    without one, :func:`pipeline.workflow.spine.segment_axial_series`): per case and level that an axial stack
    covers, the disc found within :data:`DISC_MATCH_MM` of the true centre (its positional name) and its canal
    measurement errors; and the summary table. The discs of a case are right when every covered disc is found, no
    other is, and their numbers rise with the true levels."""
    from pipeline.io.nifti import to_closest_canonical
    from pipeline.spine.levels import DISC_LEVELS
    from pipeline.spine.measure import measure_axial_only
    from pipeline.spine.qc import judge_axial_only
    from pipeline.workflow.spine import segment_axial_series

    reg, cfg, bundle = _registry_config_bundle("spine", device, bundle_name)
    rows: list[dict[str, Any]] = []
    discs_ok = 0
    for seed in seeds:
        ph = _lumbar_phantom(generator, seed)
        axials = [to_closest_canonical(s.volume)[0] for s in ph.series[1:]]
        discs, seg = segment_axial_series(bundle, axials, device=device)
        measured = measure_axial_only(discs, seg.axials, reg, cfg["spine"], seg.levels.flags)
        s = measured.summary
        verdict = judge_axial_only([a.labels for a in seg.axials], discs, reg, load_config("qc")["spine"], s.values,
                                   [a.sac for a in seg.axials]) if qc else None
        covered = [lv for lv in DISC_LEVELS if lv in ph.spec.ax_levels]  # caudal first
        found = {lv: next((d.level for d in discs if np.linalg.norm(
            d.center_ras - np.asarray(ph.truth["levels"][lv]["disc_center_ras"])) < DISC_MATCH_MM), None)
                 for lv in covered}
        numbers = [int(found[lv].split("_")[1]) for lv in covered if found[lv]]
        discs_ok += all(found.values()) and len(discs) == len(covered) and numbers == sorted(numbers)
        for lv in covered:
            t, name = ph.truth["levels"][lv], found[lv]
            row = {"seed": seed, "level": lv, "found_as": name or "", "levels_ok": name is not None,
                   "discs_found": len(discs),
                   "dsca_true": t["dsca_mm2"], "dsca": s.get(f"spine.{name}.dsca_mm2") if name else None,
                   "ap_true": t["ap_diameter_mm"], "ap": s.get(f"spine.{name}.ap_diameter_mm") if name else None}
            for side in ("left", "right"):
                row[f"recess_{side}_true"] = t["lateral_recess_depth_mm"][side]
                row[f"recess_{side}"] = s.get(f"spine.{name}.{side}.lateral_recess_depth_mm") if name else None
            if verdict is not None:
                judged = verdict.levels.get(name or "")
                row |= {"qc_status": judged.status if judged is not None else "", "study_qc_status": verdict.status,
                        "qc_reasons": join_reasons(judged.reasons) if judged is not None else ""}
            rows.append(row)
    bar = DSCA_BARS[generator]
    which = "fresh lumbar phantoms" if generator == "project" else "independent atlas lumbar phantoms (never trained on)"
    table = "\n".join([
        f"Spine bundle {bundle.name} v{bundle.metadata['version']} on the axial stacks alone (sagittal image left "
        f"out) of {len(seeds)} {which} (seeds {seeds[0]}-{seeds[-1]}): discs found, and no other, in "
        f"{discs_ok}/{len(seeds)}; {sum(bool(r['found_as']) for r in rows)}/{len(rows)} covered discs found.", "",
        "| measure | mean abs error | max abs error | within the bar |", "|---|---|---|---|",
        f"| DSCA (mm2; bar {bar[0]:g} mm2 or {100 * bar[1]:g} %) | "
        f"{_errors(rows, 'dsca', 'dsca_true', lambda t: dsca_tolerance_mm2(t, bar))} |",
        f"| AP diameter (mm; bar 1 mm) | {_errors(rows, 'ap', 'ap_true', lambda t: 1.0)} |",
        f"| lateral recess left (mm; bar 1 mm) | {_errors(rows, 'recess_left', 'recess_left_true', lambda t: 1.0)} |",
        f"| lateral recess right (mm; bar 1 mm) | "
        f"{_errors(rows, 'recess_right', 'recess_right_true', lambda t: 1.0)} |"]) + "\n"
    if qc:
        table += ("\nQC verdicts against the truth (covered discs; wrong: not found, or DSCA or AP diameter outside the "
                  f"bar): {per_verdict(rows, lambda r: level_wrong(r, bar))}. Unnamed discs never reach the rules.\n")
    return rows, table


def _errors(rows: list[dict[str, Any]], key: str, true_key: str, bar: Callable[[float], float]) -> str:
    """Mean and largest absolute error of ``key`` against ``true_key`` over the rows that measured it, and how many
    are within ``bar`` (of the true value): a table cell."""
    pairs = [(r[key], r[true_key]) for r in rows if r[key] is not None]
    if not pairs:
        return "- | - | -"
    e = [abs(p - t) for p, t in pairs]
    return f"{np.mean(e):.2f} | {np.max(e):.2f} | {sum(abs(p - t) <= bar(t) for p, t in pairs)}/{len(pairs)}"


def dsca_tolerance_mm2(true_mm2: float, dsca_bar: tuple[float, float]) -> float:
    """The DSCA error allowed at a true area: the bar's millimetres or its fraction of the area, whichever is larger.

    >>> dsca_tolerance_mm2(50.0, (8.0, 0.08)), dsca_tolerance_mm2(200.0, (8.0, 0.08))
    (8.0, 16.0)
    """
    return max(dsca_bar[0], dsca_bar[1] * true_mm2)


def level_wrong(row: dict[str, Any], dsca_bar: tuple[float, float]) -> bool:
    """Whether a level's measurements are wrong against the truth: its disc not named where it is (``levels_ok``
    false), the DSCA outside the bar (``dsca_bar``: mm2, fraction) or the AP diameter off by more than 1 mm.

    >>> level_wrong({"levels_ok": True, "dsca": 155.0, "dsca_true": 140.0, "ap": 12.0, "ap_true": 12.5}, (8.0, 0.08))
    True
    >>> level_wrong({"levels_ok": True, "dsca": None, "dsca_true": 140.0, "ap": 12.0, "ap_true": 12.5}, (8.0, 0.08))
    False
    """
    if not row["levels_ok"]:
        return True
    if row["dsca"] is not None and abs(row["dsca"] - row["dsca_true"]) > dsca_tolerance_mm2(row["dsca_true"], dsca_bar):
        return True
    return row["ap"] is not None and abs(row["ap"] - row["ap_true"]) > 1.0


def spine_qc_against_truth(rows: list[dict[str, Any]], dsca_bar: tuple[float, float]) -> str:
    """How the level QC verdicts of ``rows`` stand against the truth (:func:`level_wrong`), per verdict, and the
    levels whose values reach the rules (level not failed, study not failed; :mod:`pipeline.rules.qc_gate`) with how
    many of them are wrong.

    >>> rows = [{"levels_ok": True, "dsca": 200.0, "dsca_true": 140.0, "ap": 12.0, "ap_true": 12.0,
    ...          "qc_status": "review", "study_qc_status": "review"}]
    >>> print(spine_qc_against_truth(rows, (10.0, 0.1)))
    Level QC verdicts against the truth (wrong = not named where it is, DSCA outside the bar or AP off by more than 1 mm): 0 passed (0 wrong), 1 review (1 wrong), 0 fail (0 wrong); levels whose values reach the rules: 1 (1 wrong).
    """
    judged = [r for r in rows if r.get("qc_status")]
    return ("Level QC verdicts against the truth (wrong = not named where it is, DSCA outside the bar or AP off by "
            "more than 1 mm): " + verdict_counts(judged, lambda r: level_wrong(r, dsca_bar), "levels") + ".")
