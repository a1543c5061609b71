"""Three axial levels of one image with two label maps beside it, large enough to judge each muscle border.

    python scripts/compare_labels.py IMAGE.nii.gz A/calf/labels.nii.gz B/calf/labels.nii.gz --titles "A" "B" \
        --slices 70 50 30 --out compare.png

Radiological view (the patient's right on the left of each panel, anterior up), from the RAS+ volumes that ingest
writes; colours from configs/labels.yaml. The label maps must lie on the image's grid (``calf/labels.nii.gz`` of a
run and the image it was made from).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from pipeline.core.labels import registry  # noqa: E402
from pipeline.io.nifti import load_volume  # noqa: E402


def _cmap(anatomy: str, n: int) -> ListedColormap:
    colours = np.zeros((n, 4))
    for lab in registry(anatomy).labels:
        if lab.id < n:
            h = lab.color.lstrip("#")
            colours[lab.id] = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)] + [0.45]
    return ListedColormap(colours)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", type=Path)
    p.add_argument("labels", type=Path, nargs=2)
    p.add_argument("--titles", nargs=2, default=["labels A", "labels B"])
    p.add_argument("--slices", type=int, nargs="+", default=[70, 50, 30])
    p.add_argument("--anatomy", default="calf")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    image = load_volume(a.image)
    maps = [load_volume(x) for x in a.labels]
    if any(not m.same_grid(image) for m in maps):
        raise SystemExit("the label maps are not on the grid of the image")
    img = np.asarray(image.array, float)
    arrays = [np.asarray(m.array) for m in maps]
    n = int(max(x.max() for x in arrays)) + 1
    cmap = _cmap(a.anatomy, n)
    vmax = float(np.percentile(img, 99.5))

    def view(x: np.ndarray, z: int) -> np.ndarray:  # RAS+ (+x = patient's right): radiological, anterior up
        return np.fliplr(np.rot90(x[:, :, z]))

    fig, axes = plt.subplots(len(a.slices), 3, figsize=(27, 4.2 * len(a.slices)), squeeze=False)
    for r, z in enumerate(a.slices):
        for c in range(3):
            ax = axes[r, c]
            ax.imshow(view(img, z), cmap="gray", vmin=0, vmax=vmax)
            if c:
                ax.imshow(view(arrays[c - 1], z), cmap=cmap, vmin=0, vmax=n - 1, interpolation="nearest")
            ax.set_title(f"{['image', *a.titles][c]}, slice {z}", fontsize=13)
            ax.axis("off")
    reg = registry(a.anatomy)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap.colors[reg.sided_id(s, "left")][:3]) for s in reg.classes[1:]]
    fig.legend(handles, reg.classes[1:], loc="lower center", ncol=6, fontsize=12)
    plt.tight_layout(rect=(0, 0.05, 1, 1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(a.out, dpi=55)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
