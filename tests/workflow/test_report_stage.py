"""The report stage on the index-case sample study (ground-truth labels in place of a segmentation): QA pictures,
a self-contained report.html with the saved values, DICOM SEG/SR; no patient name or ID unless asked for."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.core.layout import StudyDir
from pipeline.report.html import render_study_report
from pipeline.workflow import stages
from tests.report.study_fixture import ground_truth_out


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    o = ground_truth_out(tmp_path_factory.mktemp("report") / "nmh")
    assert stages.report(o) == 0
    return o


def _study_copy(out: Path, tmp_path: Path) -> Path:
    """A copy of the report fixture's study folder, whose summary.json and findings.json a test may edit."""
    copy = tmp_path / "study"
    shutil.copytree(out, copy)
    return copy


def _with_values(out: Path, tmp_path: Path, values: dict[str, object]) -> Path:
    """A copy of the report fixture's study folder whose summary.json holds ``values`` over its own."""
    copy = _study_copy(out, tmp_path)
    summary = json.loads((copy / "summary.json").read_text())
    summary["values"].update(values)
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


def _render(study: Path) -> str:
    """The text of report.html for ``study`` (calf registry, configs/report.yaml, no QA pictures)."""
    creg = registry("calf")
    return render_study_report(StudyDir(study), creg.muscles, creg.groups(), load_config("report"), [])


def test_pictures_and_exports(out: Path):
    names = {p.name for p in (out / "qa").glob("*.png")}
    assert {"calf_montage.png", "calf_ff.png", "calf_csa_along_z.png", "spine_sagittal.png",
            "spine_axial_L4-L5.png", "calf_asymmetry.png", "spine_canal_levels.png"} <= names
    for p in (out / "qa").glob("*.png"):
        assert Image.open(p).format == "PNG"
    assert (out / "calf" / "seg.dcm").exists() and (out / "measurements_sr.dcm").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert "report" in prov["stages"]


def test_report_html_shows_saved_values_and_is_self_contained(out: Path):
    html = (out / "report.html").read_text()
    values = json.loads((out / "summary.json").read_text())["values"]
    findings = json.loads((out / "findings.json").read_text())
    assert f"{values['spine.L4-L5.dsca_mm2']:.0f}" in html
    assert f"{values['calf.asymmetry.triceps_surae.volume_ai_pct']:.1f}" in html
    assert findings["decision"].get("statement", findings["decision"]["status"]) in html
    # the evidence line of the first screen: the index case's fatty right GM, enlarged right soleus and L4-L5
    evidence = re.search(r'<p class="evidence"><b>Evidence:</b> (.*?)</p>', html).group(1)
    assert "right GM fat fraction" in evidence and "right soleus volume +" in evidence
    assert f"L4-L5 DSCA {values['spine.L4-L5.dsca_mm2']:.0f} mm²" in evidence and "right recess" in evidence
    assert html.index('class="evidence"') < html.index("<h2>Calf measurements</h2>")
    for rule in findings["fired_rules"]:
        assert rule["id"] in html
    assert html.count("data:image/png;base64,") >= 5
    assert not re.search(r'<img[^>]+src="(?!data:)', html), "images must be embedded"
    assert 'class="flag"' in html  # the index case is asymmetric
    name, pid = _source_patient(out)
    assert name and pid and name not in html and pid not in html


def _source_patient(out: Path) -> tuple[str, str]:
    """Patient name and ID from the first source DICOM file of the study."""
    import pydicom

    series = json.loads((out / "series.json").read_text())["series"]
    ds = pydicom.dcmread(series[0]["files"][0], stop_before_pixels=True)
    return str(ds.PatientName), str(ds.PatientID)


def test_outputs_identify_no_one_unless_asked(out: Path, tmp_path: Path):
    """series.json, summary, findings, provenance, CSV and HTML hold neither the patient's name, ID nor birth
    date; an ingest with show_phi keeps them in series.json."""
    import pydicom

    name, pid = _source_patient(out)
    series = json.loads((out / "series.json").read_text())
    ds = pydicom.dcmread(series["series"][0]["files"][0], stop_before_pixels=True)
    birth = str(ds.get("PatientBirthDate", ""))
    assert series["phi"] == "removed" and "PatientName" not in series["patient"]
    for p in [*out.glob("*.json"), *out.glob("*.html"), *out.rglob("*.csv")]:
        text = p.read_text()
        assert name not in text and pid not in text and (not birth or birth not in text), p.name
    study = Path(series["study"])
    assert stages.ingest(study, tmp_path / "phi", show_phi=True) == 0
    kept = json.loads((tmp_path / "phi" / "series.json").read_text())
    assert kept["phi"] == "kept" and kept["patient"]["PatientName"] == name


def test_qc_reasons_are_listed_one_per_line(out: Path, tmp_path: Path):
    """A failed calf QC with three reasons: the verdict box on the first screen lists each reason as its own item."""
    copy = _study_copy(out, tmp_path)
    findings = json.loads((copy / "findings.json").read_text())
    reasons = ["left leg: 3 of the structures every calf holds failed QC", "right leg: soleus fail",
               "left leg: 10 slices at the proximal end left out"]
    findings["quality_control"].update(calf_status="fail", calf_reasons="; ".join(reasons))
    (copy / "findings.json").write_text(json.dumps(findings))
    html = _render(copy)
    box = re.search(r'<div class="qc qc-fail">(.*?)</div>', html, re.S).group(1)
    assert re.findall(r"<li>(.*?)</li>", box) == reasons


def test_values_whose_qc_failed_are_struck_through_in_the_calf_table(out: Path, tmp_path: Path):
    """The right medial gastrocnemius failing QC: its right-side cells and its asymmetry cells carry the struck-through
    class and its QC column says fail, and so do those of the groups that hold it (triceps surae); the soleus row and
    the anterior group carry none."""
    copy = _with_values(out, tmp_path, {"calf.right.gastrocnemius_medial.qc_status": "fail",
                                        "calf.left.gastrocnemius_medial.qc_status": "pass",
                                        "calf.right.soleus.qc_status": "pass"})
    html = _render(copy)

    def row(name: str) -> str:
        return re.search(rf'<tr[^>]*><td class="l">{name}</td>(.*?)</tr>', html, re.S).group(1)

    gm, sol = row("gastrocnemius medial"), row("soleus")
    assert '<span class="qcv-fail">fail</span>' in gm
    assert gm.count('class="qc-failed"') == 4 + 4  # four right-side metrics and four asymmetry values
    assert "qc-failed" not in sol
    # a group that holds the failed muscle fails with it on that side; a group without it does not
    triceps, anterior = row("triceps surae"), row("anterior")
    assert '<span class="qcv-fail">fail</span>' in triceps and triceps.count('class="qc-failed"') == 4 + 4
    assert "qc-failed" not in anterior and '<span class="qcv-pass">pass</span>' in anterior


def test_every_calf_value_is_struck_through_when_the_calf_study_failed_qc(out: Path, tmp_path: Path):
    """The study's calf QC failing (the rules then use none of its calf values): the soleus, whose own verdict is pass,
    shows fail and its cells are struck through like every other row's."""
    copy = _with_values(out, tmp_path, {"calf.qc_status": "fail", "calf.right.soleus.qc_status": "pass"})
    html = _render(copy)
    sol = re.search(r'<tr[^>]*><td class="l">soleus</td>(.*?)</tr>', html, re.S).group(1)
    assert sol.count('<span class="qcv-fail">fail</span>') == 2 and "qcv-pass" not in sol
    assert sol.count('class="qc-failed"') == 4 + 4 + 4  # right, left and asymmetry cells


def test_the_girth_line_is_struck_through_when_the_rules_held_the_girth_back(out: Path, tmp_path: Path):
    """findings.json holding back the girth difference (calf QC failed): the report's girth line is struck through and
    says why; with nothing held back it is not."""
    plain = _render(out)
    assert '<s class="held">' not in plain
    copy = _study_copy(out, tmp_path)
    findings = json.loads((copy / "findings.json").read_text())
    findings["quality_control"]["held_back"] = {"calf.asymmetry.girth_diff_cm": "calf segmentation failed QC: GM"}
    (copy / "findings.json").write_text(json.dumps(findings))
    html = _render(copy)
    assert re.search(r'<s class="held">Max girth right .*?</s> <span class="small">The girth was held back from the '
                     r'rules: the segmentation it rests on failed quality control', html, re.S)


def test_a_spine_level_whose_qc_failed_is_struck_through(out: Path, tmp_path: Path):
    """L4-L5 failing QC: its QC cell says fail and its measurement and RSNA grade cells carry the struck-through
    class; L3-L4's do not. With the spine study failed, every level with a verdict fails and a level without one
    shows none."""
    copy = _with_values(out, tmp_path, {"spine.L4-L5.qc_status": "fail", "spine.L3-L4.qc_status": "pass"})
    html = _render(copy)
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr><td class="l">(L[1-5]-(?:L[1-5]|S1))</td>(.*?)</tr>',
                                                        html, re.S) if "qcv-" in m.group(2)}
    assert '<span class="qcv-fail">fail</span>' in rows["L4-L5"] and rows["L4-L5"].count("qc-failed") == 12
    assert "qc-failed" not in rows["L3-L4"]
    # the level's RSNA grades are struck through too (never flagged), L3-L4's are not
    grades = {m.group(1): m.group(2) for m in re.finditer(r'<tr><td class="l">(L[1-5]-(?:L[1-5]|S1))</td>(.*?)</tr>',
                                                          html, re.S) if "qcv-" not in m.group(2)}
    assert grades["L4-L5"].count("qc-failed") == 5 and "flag" not in grades["L4-L5"]
    assert "qc-failed" not in grades["L3-L4"]
    # a failed spine study: every level with a verdict fails; a named level without one (not in the study) shows none
    summary = json.loads((copy / "summary.json").read_text())
    summary["values"]["spine.qc_status"] = "fail"
    summary["values"].pop("spine.L1-L2.qc_status", None)
    (copy / "summary.json").write_text(json.dumps(summary))
    html = _render(copy)
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr><td class="l">(L[1-5]-(?:L[1-5]|S1))</td>(.*?)</tr>',
                                                        html, re.S) if "qcv-" in m.group(2)}
    assert '<span class="qcv-fail">fail</span>' in rows["L3-L4"]
    assert '<span class="qcv-none">' in rows["L1-L2"] and "qcv-fail" not in rows["L1-L2"]


def test_measurement_rows_carry_their_qc_verdict(out: Path):
    """Every row of calf/measurements.csv carries its structure's QC verdict as summary.json holds it (a group: the
    worst of its members'), every row of calf/asymmetry.csv the worst over both legs (empty for the leg outline),
    calf/slices.csv its muscle's (the leg outline's rows and calf/legs.csv the study's), and every row of
    spine/measurements.csv its level's."""
    import csv

    from pipeline.core.labels import registry
    from pipeline.core.verdict import group_verdict

    values = json.loads((out / "summary.json").read_text())["values"]
    reg = registry("calf")
    members = reg.members()
    calf_rows = list(csv.DictReader((out / "calf" / "measurements.csv").open()))
    assert calf_rows and any(r["structure"] in reg.groups() for r in calf_rows)
    for r in calf_rows:
        want = group_verdict([values[f"calf.{r['side']}.{m}.qc_status"] for m in members[r["structure"]]])
        assert r["qc_status"] == want, r
    for r in csv.DictReader((out / "calf" / "slices.csv").open()):
        want = values["calf.qc_status"] if r["muscle"] == "leg_girth" else group_verdict(
            [values[f"calf.{r['side']}.{r['muscle']}.qc_status"]], study=values["calf.qc_status"])
        assert r["qc_status"] == want, r
    assert {r["qc_status"] for r in csv.DictReader((out / "calf" / "legs.csv").open())} == {values["calf.qc_status"]}
    asym_rows = list(csv.DictReader((out / "calf" / "asymmetry.csv").open()))
    assert asym_rows
    for r in asym_rows:
        want = group_verdict([values[f"calf.{side}.{m}.qc_status"] for side in ("left", "right")
                              for m in members.get(r["structure"], ())]) or ""
        assert r["qc_status"] == want, r
    spine_rows = list(csv.DictReader((out / "spine" / "measurements.csv").open()))
    assert spine_rows and all(r["qc_status"] == values[f"spine.{r['level']}.qc_status"] for r in spine_rows)


def _sr_numbers(path: Path) -> list[tuple[str, str]]:
    """(concept name, numeric value) of every NUM item of an SR, in tree order."""
    import pydicom

    out: list[tuple[str, str]] = []

    def walk(items) -> None:
        for item in items:
            if item.ValueType == "NUM":
                out.append((item.ConceptNameCodeSequence[0].CodeMeaning,
                            str(item.MeasuredValueSequence[0].NumericValue)))
            walk(item.get("ContentSequence", []))

    walk(pydicom.dcmread(path).ContentSequence)
    return out


def test_the_sr_of_a_study_holds_its_decision_with_evidence_and_its_qc_verdicts(out: Path):
    """The report stage's SR carries findings.json's decision statement and the report's evidence line as
    "Impression" text, and one "Quality Assessment" text per segmented anatomy with its verdict."""
    import pydicom

    from pipeline.report.html import evidence_line

    findings = json.loads((out / "findings.json").read_text())
    values = json.loads((out / "summary.json").read_text())["values"]
    ds = pydicom.dcmread(out / "measurements_sr.dcm")
    container = next(it for it in ds.ContentSequence if it.ConceptNameCodeSequence[0].CodeValue == "C0034375")
    texts = {}
    for it in container.ContentSequence:
        texts.setdefault(it.ConceptNameCodeSequence[0].CodeMeaning, []).append(it.TextValue)
    impression = texts["Impression"][0]
    assert impression.startswith(findings["decision"]["statement"])
    evidence = evidence_line(findings, values)
    assert evidence and f"Evidence: {evidence}." in impression
    qc = findings["quality_control"]
    assert texts["Quality Assessment"] == [f"calf segmentation quality control: {qc['calf_status']}",
                                           f"lumbar spine segmentation quality control: {qc['spine_status']}"]


def test_exports_written_in_a_second_process_equal_those_written_here(out: Path, tmp_path: Path, monkeypatch):
    """The report stage wrote the DICOM exports in a second process (more than one CPU usable here); writing them in
    this process gives the same segments and the same SR measurements; with the second process not allowed (batch
    workers) none is started."""
    import shutil

    import pydicom

    from pipeline.core.layout import StudyDir
    from pipeline.workflow import report as driver

    if driver._usable_cpus() < 2:
        pytest.skip("one usable CPU: the exports are written in this process")
    copy = tmp_path / "study"
    shutil.copytree(out, copy)
    started = []
    monkeypatch.setattr(driver, "_ExportProcess", lambda *a: started.append(a) or pytest.fail("process started"))
    driver.allow_export_process(False)
    try:
        assert driver.report(StudyDir(copy))["exports"] == ["calf/seg.dcm", "spine/seg.dcm", "measurements_sr.dcm"]
    finally:
        driver.allow_export_process(True)
    assert not started
    for name in ("calf/seg.dcm", "spine/seg.dcm"):
        a, b = pydicom.dcmread(out / name), pydicom.dcmread(copy / name)
        assert a.PixelData == b.PixelData and a.NumberOfFrames == b.NumberOfFrames
        assert a.SOPInstanceUID != b.SOPInstanceUID  # written twice, not copied
    numbers = _sr_numbers(out / "measurements_sr.dcm")
    assert len(numbers) > 100 and numbers == _sr_numbers(copy / "measurements_sr.dcm")


def test_an_export_error_in_the_second_process_is_raised_in_this_one(out: Path, tmp_path: Path):
    """A label map that cannot be read fails the exports with the same error (class and message) whether they are
    written in the second process or in this one, and the second process is gone afterwards."""
    import shutil

    from pipeline.core.layout import StudyDir
    from pipeline.workflow import report as driver

    copy = tmp_path / "study"
    shutil.copytree(out, copy)
    (copy / "calf" / "labels.nii.gz").write_bytes(b"not a NIfTI file")
    with pytest.raises(Exception) as here:
        driver.dicom_exports(StudyDir(copy))
    with driver._ExportProcess(StudyDir(copy), False) as export:
        with pytest.raises(type(here.value)) as there:
            export.result()
        proc = export._proc
    assert str(there.value) == str(here.value) and "labels.nii.gz" in str(there.value)
    assert proc.poll() is not None


def test_a_script_without_a_main_guard_can_run_a_dicom_study(tmp_path: Path):
    """The export process is a fresh interpreter that runs nothing of the caller's script: a script that calls
    ``stages.run`` at module level (no ``if __name__ == "__main__"``) completes instead of running itself again
    and waiting for its own output folder."""
    import subprocess
    import sys

    from tests.report.study_fixture import SAMPLE

    script = tmp_path / "script.py"
    script.write_text("from pipeline.workflow import stages\n"
                      f"stages.run({str(SAMPLE)!r}, {str(tmp_path / 'out')!r})\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(root), "LEGMRI_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "measurements_sr.dcm").exists()


def _csv_values(out: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(anatomy, SR tracking id) -> {metric: value} from the study's tables (calf measurements, legs, asymmetry;
    spine measurements), with the SR's tracking ids (``<structure>_<side>``, ``leg_<side>``,
    ``<structure>_asymmetry``, ``<level>``, ``<level>_<side>``)."""
    import csv

    tables = {
        "calf/measurements.csv": lambda r: ("calf", f"{r['structure']}_{r['side']}"),
        "calf/legs.csv": lambda r: ("calf", f"leg_{r['side']}"),
        "calf/asymmetry.csv": lambda r: ("calf", f"{r['structure']}_asymmetry"),
        "spine/measurements.csv": lambda r: ("spine", r["level"] if r["side"] == "central"
                                             else f"{r['level']}_{r['side']}"),
    }
    # a spine row's numeric grade is the summary's <name>_grade of its measure (the foramen's Lee grade)
    grade_of = {"foramen_area_mm2": "foramen_grade"}
    out_values: dict[tuple[str, str], dict[str, float]] = {}
    for name, group_of in tables.items():
        for r in csv.DictReader((out / name).open()):
            if r["value"] not in ("", None):
                out_values.setdefault(group_of(r), {})[r["metric"]] = float(r["value"])
            if r.get("grade") and r["metric"] in grade_of:
                out_values.setdefault(group_of(r), {})[grade_of[r["metric"]]] = float(r["grade"])
    return out_values


def test_every_number_of_the_sr_equals_the_tables(out: Path):
    """Each numeric item of measurements_sr.dcm, identified by its group's tracking id and its concept (standard:
    concept, derivation and tissue, as pipeline.io.export.METRIC_CONCEPTS maps them; private: the metric's name),
    equals the value of that metric in the study's CSV tables (to their rounding)."""
    import pydicom

    from pipeline.io.export import METRIC_CONCEPTS, PRIVATE_SCHEME

    def key(c) -> str | None:
        return None if c is None else c.value

    by_concept: dict[tuple, list[str]] = {}
    for metric, (concept, derivation, tissue) in METRIC_CONCEPTS.items():
        by_concept.setdefault((concept.value, key(derivation), key(tissue)), []).append(metric)
    tables = _csv_values(out)
    checked = 0
    for group in _sr_measurement_groups(pydicom.dcmread(out / "measurements_sr.dcm")):
        anatomy = "spine" if any(k[0] == "spine" and k[1] == group["id"] for k in tables) else "calf"
        have = tables[(anatomy, group["id"])]
        for item in group["numbers"]:
            name = item.ConceptNameCodeSequence[0]
            mods = {c.ConceptNameCodeSequence[0].CodeMeaning: c.ConceptCodeSequence[0].CodeValue
                    for c in item.get("ContentSequence", []) if c.ValueType == "CODE"}
            if name.CodingSchemeDesignator == PRIVATE_SCHEME:
                metric = name.CodeMeaning
            else:
                candidates = [m for m in by_concept[(name.CodeValue, mods.get("Derivation"), mods.get("Finding Site"))]
                              if m in have]
                assert len(candidates) == 1, (group["id"], name.CodeMeaning, candidates)
                metric = candidates[0]
            value = float(item.MeasuredValueSequence[0].NumericValue)
            assert value == pytest.approx(have[metric], abs=1e-3, rel=1e-6), (group["id"], metric)
            checked += 1
    assert checked > 100


def _sr_measurement_groups(ds) -> list[dict]:
    """The measurement groups of an SR: tracking identifier and NUM items."""
    groups: list[dict] = []

    def walk(items) -> None:
        for it in items:
            if it.get("ValueType") == "CONTAINER" and it.ConceptNameCodeSequence[0].CodeMeaning == "Measurement Group":
                g = {"id": None, "numbers": []}
                for sub in it.ContentSequence:
                    meaning = sub.ConceptNameCodeSequence[0].CodeMeaning
                    if sub.ValueType == "TEXT" and meaning == "Tracking Identifier":
                        g["id"] = sub.TextValue
                    elif sub.ValueType == "NUM":
                        g["numbers"].append(sub)
                groups.append(g)
            elif "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    return groups


def test_a_study_without_spine_measurement_says_why_in_the_report(out: Path, tmp_path: Path):
    """A lumbar series that was not segmented: the report's lumbar section gives summary.json's reason, not "no
    lumbar series"."""
    copy = _study_copy(out, tmp_path)
    summary = json.loads((copy / "summary.json").read_text())
    reason = "spine not segmented"
    summary["values"] = {k: v for k, v in summary["values"].items() if not k.startswith("spine.")}
    summary["values"]["spine.available"] = False
    summary["missing"] = {k: v for k, v in summary["missing"].items() if not k.startswith("spine.")}
    summary["missing"]["spine.L4-L5.dsca_mm2"] = reason
    (copy / "summary.json").write_text(json.dumps(summary))
    html = _render(copy)
    assert f"<p>Not available: {reason}</p>" in html and "no lumbar series" not in html
