"""Tissue ids of the lumbar phantom (pipeline.synth.lumbar.SpineAnatomy.classify_tissue) against its labels and signal."""

from __future__ import annotations

import numpy as np

from pipeline.core.labels import registry
from pipeline.synth.lumbar import T2_SIGNAL, TISSUE_IDS, TISSUES, LumbarSpec, SpineAnatomy


def _sagittal_points(spine: SpineAnatomy, x: float) -> np.ndarray:
    s = np.linspace(-30, spine.length, 300)
    a = np.linspace(-90, 40, 260)
    return np.stack([spine.point(si, ai, x) for si in s for ai in a]).reshape(300, 260, 3)


def test_tissue_ids_give_the_signal_and_agree_with_labels():
    reg = registry("spine")
    spine = SpineAnatomy(LumbarSpec.random(np.random.default_rng(4)))
    lab, sig, tissue = spine.classify_tissue(_sagittal_points(spine, 1.2))
    lab2, sig2 = spine.classify(_sagittal_points(spine, 1.2))
    assert np.array_equal(lab, lab2) and np.array_equal(sig, sig2)
    signal = np.array([T2_SIGNAL["root"] if t == "cauda" else T2_SIGNAL[t] for t in TISSUES])
    assert np.array_equal(signal[tissue], sig)
    structure = np.array([""] + [reg.by_id()[i].structure if i in reg.by_id() else "" for i in range(1, lab.max() + 1)],
                         dtype=object)[lab]
    assert set(np.unique(structure[tissue == TISSUE_IDS["csf"]])) == {"dural_sac"}
    assert (tissue == TISSUE_IDS["cauda"]).any()
    assert set(np.unique(structure[tissue == TISSUE_IDS["cauda"]])) == {"dural_sac"}
    assert set(np.unique(structure[np.isin(tissue, [TISSUE_IDS["nucleus"], TISSUE_IDS["annulus"]])])) == {"disc"}
    assert set(np.unique(structure[tissue == TISSUE_IDS["marrow"]])) <= {"vertebral_body", "sacrum"}
    assert set(np.unique(lab[np.isin(tissue, [TISSUE_IDS[t] for t in ("paraspinal", "soft", "background")])])) == {0}
