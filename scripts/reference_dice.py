"""Dice of a calf label map against the reference annotation, per leg and structure, on the annotated slices only.

    python scripts/reference_dice.py --labels references/calf_dixon3d_siemens/labels.nii.gz \
        --slices references/calf_dixon3d_siemens/slices.json --pred OUT/calf/labels.nii.gz [--sides right] [--json F]

``slices.json`` lists the annotated legs as ``{"side": "left" | "right", "slice": k}``. A leg's reference voxels are
the annotation's voxels of slice k on its side of the midline between the annotated legs (RAS+: +x is the patient's
right). A structure counts as predicted where the map holds that structure's label of the same side, so a leg
whose sides were swapped scores 0; ``side agreement`` is the share of the predicted voxels in the leg's half of the
slice that carry its side's labels. Dice = 2 |A n B| / (|A| + |B|) (Dice, Ecology 1945;26:297-302).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.core.geometry import SIDES
from pipeline.core.labels import Registry, registry
from pipeline.core.volume import Volume
from pipeline.io.nifti import load_volume
from pipeline.segment.train import dice_per_class
from pipeline.workflow.calf_reference import midline_x, side_mask

TRICEPS = ("gastrocnemius_medial", "gastrocnemius_lateral", "soleus")


def label_luts(reg: Registry, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables over the ids of a sided label map: the side-less class id, and the side (1 left, 2 right, 0
    none) of each."""
    lut = np.zeros(max(lab.id for lab in reg.labels) + 1, np.int64)
    if pred.min() < 0 or pred.max() >= len(lut):
        raise ValueError(f"the predicted map holds ids outside the calf labels 0-{len(lut) - 1}")
    side = np.zeros(len(lut), np.int64)
    code = {name: k + 1 for k, name in enumerate(SIDES)}
    for lab in reg.labels:
        lut[lab.id] = reg.class_id(lab.structure)
        side[lab.id] = code.get(lab.side or "", 0)
    return lut, side


def _mean(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def reference_dice(ref: Volume, pred: Volume, slices: list[tuple[str, int]], reg: Registry
                   ) -> dict[str, dict[str, float | None]]:
    """Side -> structure -> Dice over that side's annotated slices of ``slices`` (see the module's description),
    plus ``mean_triceps_surae`` (GM, GL, SOL), ``mean_muscles`` (mean over the muscles that have a Dice) and
    ``side_agreement``."""
    if not pred.same_grid(ref):
        raise ValueError("the predicted label map is not on the reference's grid")
    n = len(reg.classes)
    codes = {s: k + 1 for k, s in enumerate(SIDES)}
    midline = midline_x(ref)
    refs: dict[str, list[np.ndarray]] = {s: [] for s, _ in slices}
    preds: dict[str, list[np.ndarray]] = {s: [] for s, _ in slices}
    agree = {s: [0, 0] for s, _ in slices}  # predicted voxels of the leg named as the entry's side, all of them
    for side, z in slices:
        half = side_mask(ref, z, side, midline)
        r = np.where(half, np.asarray(ref.array[:, :, z], np.int64), 0)
        ids = np.asarray(pred.array[:, :, z], np.int64)
        lut, side_of = label_luts(reg, ids)
        p, named = lut[ids], side_of[ids] == codes[side]
        agree[side][0] += int((named & half & (p > 0)).sum())
        agree[side][1] += int((half & (p > 0)).sum())
        refs[side].append(r.ravel())
        preds[side].append(np.where(named, p, 0).ravel())
    out: dict[str, dict[str, float | None]] = {}
    for side in sorted(refs):
        per_class = dice_per_class(np.concatenate(preds[side]), np.concatenate(refs[side]), n)
        d = {name: per_class[k] for k, name in enumerate(reg.classes) if k}
        d["mean_triceps_surae"] = _mean([d[m] for m in TRICEPS])
        d["mean_muscles"] = _mean([d[m] for m in reg.muscles])
        d["side_agreement"] = agree[side][0] / agree[side][1] if agree[side][1] else None
        out[side] = d
    return out


def table(result: dict[str, dict[str, float | None]], reg: Registry) -> str:
    """The Dice table: one row per structure (abbreviation where the registry has one), the two means and the
    side agreement; one column per side."""
    sides = sorted(result)
    names = [*reg.classes[1:], "mean_triceps_surae", "mean_muscles", "side_agreement"]
    label = {name: reg.structures.get(name, {}).get("abbrev") or name for name in names}
    label |= {"mean_triceps_surae": "mean GM/GL/SOL", "mean_muscles": "mean muscles",
              "side_agreement": "side agreement"}
    rows = [f"{'structure':<18}" + "".join(f"{s:>8}" for s in sides)]
    for name in names:
        if name in ("mean_triceps_surae", "side_agreement"):
            rows.append("-" * len(rows[0]))
        cells = [result[s][name] for s in sides]
        rows.append(f"{label[name]:<18}" + "".join("       -" if v is None else f"{v:8.3f}" for v in cells))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=Path, required=True, help="the reference annotation (side-less class ids)")
    p.add_argument("--slices", type=Path, required=True, help="the annotated legs (slices.json)")
    p.add_argument("--pred", type=Path, required=True, help="the predicted sided label map (calf/labels.nii.gz)")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES), help="the legs to score")
    p.add_argument("--json", type=Path, default=None, help="also write the Dice values here")
    a = p.parse_args(argv)
    slices = [(str(e["side"]), int(e["slice"])) for e in json.loads(a.slices.read_text())]
    slices = [(s, z) for s, z in slices if s in a.sides]
    if not slices:
        raise SystemExit(f"no annotated slice of the {' or '.join(a.sides)} leg in {a.slices}")
    reg = registry("calf")
    result = reference_dice(load_volume(a.labels), load_volume(a.pred), slices, reg)
    print(f"{a.pred}: Dice against {a.labels} on " + ", ".join(f"{s} {z}" for s, z in slices))
    print(table(result, reg))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"reference": str(a.labels), "prediction": str(a.pred),
                                      "slices": [[s, z] for s, z in slices], "dice": result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
