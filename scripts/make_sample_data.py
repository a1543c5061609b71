"""Regenerate sample_data/: the three committed phantom studies (deterministic) and the QA pictures of their series.

    python scripts/make_sample_data.py            # writes sample_data/{nmh_case,control,myopathic} and sample_data/qa/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.io.nifti import load_volume  # noqa: E402
from pipeline.io.study import ingest_study  # noqa: E402
from pipeline.synth import write_case  # noqa: E402

CASES = {"nmh_case": ("nmh", 20260), "control": ("control", 20261), "myopathic": ("myopathic", 20262)}


def qa_picture(study: Path, png: Path) -> None:
    """One mid slice of every series in radiological display (patient right on the image left, anterior up)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        index = ingest_study(study, Path(tmp))
        series = [s for s in index["series"] if s["volume"]]
        fig, axes = plt.subplots(2, (len(series) + 1) // 2, figsize=(3.2 * ((len(series) + 1) // 2), 6.4))
        for ax, s in zip(axes.ravel(), series):
            vol = load_volume(Path(tmp) / s["volume"])
            arr = vol.array.astype(float)
            if s["plane"] == "sagittal":
                img = arr[arr.shape[0] // 2, :, :].T[::-1, ::-1]  # rows superior->inferior, anterior on the left
            else:
                k = arr.shape[2] // 2
                img = arr[::-1, :, k].T[::-1, :]  # x reversed (patient right on the left), anterior up
            ax.imshow(img, cmap="gray", vmax=np.percentile(img, 99.5), aspect="equal")
            ax.set_title(f"{s['role']}\n{s['description']}", fontsize=8)
            ax.axis("off")
        for ax in axes.ravel()[len(series):]:
            ax.axis("off")
        fig.suptitle(study.name)
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=70)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data")
    args = ap.parse_args()
    for folder, (case, seed) in CASES.items():
        study = write_case(case, seed, args.out / folder, transfer_syntax="jpeg2000")
        qa_picture(study, args.out / "qa" / f"{folder}.png")
        size = sum(p.stat().st_size for p in study.rglob("*") if p.is_file()) / 1e6
        print(f"{folder}: case={case} seed={seed} {size:.2f} MB")


if __name__ == "__main__":
    main()
