"""Tissue ids of the lumbar phantom (pipeline.synth.lumbar.SpineAnatomy.classify_tissue) against its labels and signal."""

from __future__ import annotations

import numpy as np

from pipeline.core.labels import registry
from pipeline.synth.lumbar import (
    CORD_SIGNAL,
    LEVELS,
    T2_SIGNAL,
    TISSUE_IDS,
    TISSUES,
    LumbarSpec,
    SpineAnatomy,
)


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
    assert spine.spec.dura_signal is not None and spine.spec.cauda_sediment > 0  # seed 4 draws both
    other = {"cauda": T2_SIGNAL["root"], "dura": spine.spec.dura_signal, "cord": CORD_SIGNAL}
    signal = np.array([other[t] if t in other else T2_SIGNAL[t] for t in TISSUES])
    assert np.array_equal(signal[tissue], sig)
    structure = np.array([""] + [reg.by_id()[i].structure if i in reg.by_id() else "" for i in range(1, lab.max() + 1)],
                         dtype=object)[lab]
    assert set(np.unique(structure[tissue == TISSUE_IDS["csf"]])) == {"dural_sac"}
    assert (tissue == TISSUE_IDS["cauda"]).any()
    assert set(np.unique(structure[tissue == TISSUE_IDS["cauda"]])) == {"dural_sac"}
    assert set(np.unique(structure[np.isin(tissue, [TISSUE_IDS["nucleus"], TISSUE_IDS["annulus"]])])) == {"disc"}
    assert set(np.unique(structure[tissue == TISSUE_IDS["marrow"]])) <= {"vertebral_body", "sacrum"}
    assert set(np.unique(lab[np.isin(tissue, [TISSUE_IDS[t] for t in ("paraspinal", "soft", "background")])])) == {0}


def _midline_profile(spec: LumbarSpec, slice_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Structure names, signal averaged over a sagittal slice of ``slice_mm`` (x within +-slice_mm / 2) and tissue
    on the midline, along the anterior axis ``a`` (0.05 mm steps) through the middle of the L3 body."""
    reg = registry("spine")
    spine = SpineAnatomy(spec)
    s = next((a + b) / 2 for kind, name, a, b in spine.segments if name == "L3")
    a = np.arange(-60.0, 0.0, 0.05)
    xs = np.linspace(-slice_mm / 2, slice_mm / 2, 17)
    pts = np.stack([[spine.point(s, ai, x) for ai in a] for x in xs])
    lab, sig, tissue = spine.classify_tissue(pts)
    names = np.array([reg.by_id()[i].structure if i in reg.by_id() else "" for i in lab[len(xs) // 2]], dtype=object)
    return a, names, sig.mean(axis=0), tissue[len(xs) // 2]


def test_sedimented_roots_darken_the_dorsal_sac_and_stay_sac():
    """The cauda equina sedimented into the dorsal share of the sac (LumbarSpec.cauda_sediment) lowers the signal of
    that part of the sac on a 4 mm sagittal slice, as in a supine patient (Barz et al., Spine 2010); every point of it
    is still dural sac, so the truth the canal is measured against is unchanged."""
    plain = LumbarSpec(levels={lv: LumbarSpec().levels[lv] for lv in LEVELS})
    sedimented = LumbarSpec(cauda_sediment=0.4, cauda_seed=7)
    a0, names0, sig0, _ = _midline_profile(plain)
    a1, names1, sig1, tissue1 = _midline_profile(sedimented)
    assert np.array_equal(names0, names1)
    sac = np.nonzero(names1 == "dural_sac")[0]
    depth = a1[sac[-1]] - a1[sac[0]]
    dorsal = sac[a1[sac] < a1[sac[0]] + 0.3 * depth]
    ventral = sac[a1[sac] > a1[sac[-1]] - 0.3 * depth]
    assert sig0[dorsal].mean() > 0.95 * T2_SIGNAL["csf"]
    assert sig1[dorsal].mean() < 0.85 * T2_SIGNAL["csf"]
    assert sig1[ventral].mean() > 0.95 * T2_SIGNAL["csf"]
    assert set(names1[tissue1 == TISSUE_IDS["cauda"]]) == {"dural_sac"}


def test_dorsal_epidural_fat_and_dura_behind_the_sac():
    """``dorsal_fat_mm`` of epidural fat lies between the sac and the ligamentum flavum on the midline; the dura is a
    thin rim of its own signal round the sac that keeps the class of what it covers."""
    for fat_mm in (0.5, 3.0):
        a, names, _, tissue = _midline_profile(LumbarSpec(dorsal_fat_mm=fat_mm, dura_signal=0.1), slice_mm=0.0)
        sac_back = a[np.nonzero(names == "dural_sac")[0][0]]
        behind = (a < sac_back) & (a > sac_back - fat_mm - 2.0)
        fat = a[behind & (names == "epidural_fat")]
        flavum_front = a[behind & (names == "ligamentum_flavum")].max()
        assert abs((sac_back - flavum_front) - fat_mm) < 0.15
        assert abs(fat.max() - fat.min() + 0.05 - fat_mm) < 0.15
        dura = a[tissue == TISSUE_IDS["dura"]]
        dorsal_dura = dura[dura < sac_back]
        assert dorsal_dura.size and sac_back - 0.5 < dorsal_dura.min()
        assert set(names[tissue == TISSUE_IDS["dura"]]) == {"epidural_fat"}


def test_thoracolumbar_junction_continues_the_column_and_holds_the_cord_in_the_sac():
    """Thoracic bodies above L1 carry the positional labels counted from L5 (T12 = vertebra_6, T12-L1 = disc_6);
    the spinal cord lies inside the sac above its conus tip, labelled dural sac with an intermediate T2 signal, and
    the sedimented roots begin only near the conus."""
    reg = registry("spine")
    spec = LumbarSpec(thoracic_bodies=2, conus_s_mm=20.0, cord_shift=0.3, cauda_sediment=0.4, cauda_seed=3)
    spine = SpineAnatomy(spec)
    names = [name for kind, name, _, _ in spine.segments]
    assert names[:4] == ["T11", "T11-T12", "T12", "T12-L1"] and names[4] == "L1"
    assert spine.s_top < -50 and list(spine.disc_s) == list(LEVELS)
    by_id = reg.by_id()
    for name, label in (("T12", "vertebra_6"), ("T11", "vertebra_7"), ("T12-L1", "disc_6"), ("T11-T12", "disc_7")):
        s0, s1 = next((a, b) for kind, n, a, b in spine.segments if n == name)
        lab, _, _ = spine.classify_tissue(spine.point((s0 + s1) / 2)[None])
        assert by_id[int(lab[0])].name == label
    s = np.linspace(spine.s_top + 1, 80, 200)
    a = np.linspace(-40, -10, 300)
    pts = np.stack([spine.point(si, ai, 0.0) for si in s for ai in a]).reshape(200, 300, 3)
    lab, sig, tissue = spine.classify_tissue(pts)
    cord = tissue == TISSUE_IDS["cord"]
    assert cord[s < 0].any(axis=1).all()  # the cord runs the whole way above L1
    assert not cord[s >= spec.conus_s_mm].any()  # and ends at the conus tip
    assert {by_id[int(i)].structure for i in np.unique(lab[cord])} == {"dural_sac"}
    assert np.allclose(sig[cord], CORD_SIGNAL)
    assert not (tissue == TISSUE_IDS["cauda"])[s < spec.conus_s_mm - 10].any()
    without = SpineAnatomy(LumbarSpec(cauda_sediment=0.4, cauda_seed=3))
    _, _, tissue0 = without.classify_tissue(pts)
    assert not (tissue0 == TISSUE_IDS["cord"]).any() and without.s_top == -20.0
