"""Users' labelled data in the Medical Segmentation Decathlon / nnU-Net layout.

    DATASET/
      dataset.json              {"channel_names": {"0": "water", "1": "fat"}, "labels": {"background": 0, ...}}
      imagesTr/CASE_0000.nii.gz  one file per channel (_0000, _0001, ...)
      labelsTr/CASE.nii.gz       integer label map on the grid of the images

Label names in dataset.json are mapped to the bundle's classes by name; a ``_left`` / ``_right`` suffix is dropped
(sides are assigned from world coordinates, never learned). A name that is not a class of the anatomy is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.core.errors import BadInputError
from pipeline.core.volume import Volume


def _load(path: Path) -> Volume:
    img = nib.load(str(path))
    return Volume(np.asanyarray(img.dataobj), img.affine)


def read_msd_dataset(root: Path, classes: list[str], channels: list[str]) -> list[tuple[list[Volume], Volume]]:
    """Cases of an MSD/nnU-Net dataset as (channel volumes in ``channels`` order, class map) pairs."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        raise BadInputError("no dataset.json.", path=root,
                            fix="lay the data out as imagesTr/, labelsTr/ and dataset.json (nnU-Net v2 format).")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    names = meta.get("channel_names") or meta.get("modality") or {}
    order = {str(v).lower(): int(k) for k, v in names.items()}
    missing = [c for c in channels if c not in order]
    if missing:
        raise BadInputError(f"dataset.json channel_names {names} lack {missing}.", path=meta_path,
                            fix=f"name the channels {channels} in dataset.json 'channel_names'.")
    lut = np.zeros(1 + max(int(v) for v in meta["labels"].values()), np.uint8)
    for name, value in meta["labels"].items():
        base = name.removesuffix("_left").removesuffix("_right")
        if base not in classes:
            raise BadInputError(f"label '{name}' is not a class of this bundle ({', '.join(classes)}).",
                                path=meta_path, fix="rename the label to a registry name from configs/labels.yaml.")
        lut[int(value)] = classes.index(base)
    cases = []
    for lab_path in sorted((root / "labelsTr").glob("*.nii*")):
        case = lab_path.name.split(".nii")[0]
        vols = []
        for c in channels:
            p = root / "imagesTr" / f"{case}_{order[c]:04d}.nii.gz"
            if not p.exists():
                p = p.with_suffix("")  # .nii
            if not p.exists():
                raise BadInputError(f"channel '{c}' of case '{case}' is missing.", path=root / "imagesTr",
                                    fix=f"add {case}_{order[c]:04d}.nii.gz.")
            vols.append(_load(p))
        lab = _load(lab_path)
        if not vols[0].same_grid(lab):
            raise BadInputError(f"label map of '{case}' is not on the grid of its images.", path=lab_path,
                                fix="resample the label map to the image grid (nearest neighbour).")
        cases.append((vols, lab.with_array(lut[np.asarray(lab.array, np.int64)])))
    if not cases:
        raise BadInputError("labelsTr holds no cases.", path=root / "labelsTr", fix="add labelled cases.")
    return cases
