"""Rules engine: every rule fires and stays silent on minimal inputs, malformed rule files fail at load with the rule
id, thresholds in the YAML change outcomes, clinical input validation, and the sample cases end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import DEFAULT_CONFIG_DIR, load_config
from pipeline.core.errors import BadInputError, ConfigError
from pipeline.core.layout import StudyDir
from pipeline.core.summary import Summary
from pipeline.rules import evaluate_summary, findings
from pipeline.rules.clinical import Clinical, load_clinical
from pipeline.rules.derive import SYMBOLS, Derived, derive
from pipeline.rules.engine import evaluate, load_rules
from pipeline.workflow import calf as calf_driver
from pipeline.workflow import spine as spine_driver

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
RULES = DEFAULT_CONFIG_DIR / "rules.yaml"

BASELINE = {
    "calf_available": True, "both_legs": True, "girth_diff_cm": 0.2, "girth_diff_abs_cm": 0.2, "larger_side": "right",
    "affected_side": "", "n_affected_side": 0.0, "n_affected_right": 0.0, "n_affected_left": 0.0, "n_enlarged_affected_side": 0.0,
    "n_fatty_affected_side": 0.0, "n_complete_fatty_affected_side": 0.0, "n_true_hypertrophy": 0.0,
    "n_pseudohypertrophy": 0.0, "territory_fit": False, "territory_roots": (), "n_fatty_bilateral": 0.0,
    "n_roots_bilateral": 0.0, "max_abs_volume_ai_pct": 3.0,
    "median_abs_volume_ai_bilateral_pct": 2.0, "single_muscle_enlarged": False, "spine_available": True,
    "spine_concordant": False, "spine_concordant_levels": (), "any_central_stenosis": False, "ck_x_uln": 2.0,
    "emg_neurogenic_territory": False, "emg_normal_territory": False, "emg_neurogenic_any": False, "emg_myopathic": False,
    "ankle_reflex_reduced_affected_side": False, "weakness_affected_side": None, "sensory_loss_territory": False,
    "slr_positive_affected_side": False, "oedema_clinical": False, "acute_onset": True, "pain": False,
}
TERRITORY = {"affected_side": "right", "territory_fit": True, "territory_roots": ("S1", "S2"), "n_affected_side": 2.0}
SINGLE = {"single_muscle_enlarged": True}
CASES = {  # rule id: (values that make it fire, values that keep it silent)
    "calf_girth_asymmetry": ({"girth_diff_abs_cm": 3.0}, {"girth_diff_abs_cm": 1.0}),
    "single_root_territory": (TERRITORY, {**TERRITORY, "n_affected_side": 1.0}),
    "true_hypertrophy_in_territory": ({**TERRITORY, "n_true_hypertrophy": 1.0}, TERRITORY),
    "fatty_change_in_territory": ({**TERRITORY, "n_fatty_affected_side": 1.0}, {**TERRITORY, "affected_side": ""}),
    "concordant_spine_narrowing": ({"spine_concordant": True}, {}),
    "emg_neurogenic_in_territory": ({"emg_neurogenic_territory": True}, {}),
    "emg_normal_in_territory": ({"emg_normal_territory": True}, {}),
    "normal_neurological_examination": ({"weakness_affected_side": False},
                                        {"weakness_affected_side": False, "sensory_loss_territory": True}),
    "ankle_reflex_reduced": ({"ankle_reflex_reduced_affected_side": True}, {}),
    "weakness_affected_side": ({"weakness_affected_side": True}, {"weakness_affected_side": False}),
    "sensory_loss_in_territory": ({"sensory_loss_territory": True}, {}),
    "straight_leg_raise_positive": ({"slr_positive_affected_side": True}, {}),
    "ck_normal": ({"ck_x_uln": 0.6}, {"ck_x_uln": 1.5}),
    "ck_markedly_raised": ({"ck_x_uln": 8.0}, {"ck_x_uln": 3.0}),
    "bilateral_symmetric_fatty_infiltration": ({"n_fatty_bilateral": 4.0, "median_abs_volume_ai_bilateral_pct": 5.0},
                                               {"n_fatty_bilateral": 4.0, "median_abs_volume_ai_bilateral_pct": 30.0}),
    "several_root_territories_bilateral": ({"n_roots_bilateral": 2.0}, {"n_roots_bilateral": 1.0}),
    "emg_myopathic": ({"emg_myopathic": True}, {}),
    "pseudohypertrophy": ({"n_pseudohypertrophy": 1.0, "n_fatty_bilateral": 1.0}, {"n_fatty_bilateral": 1.0}),
    "single_muscle_enlarged": (SINGLE, {}),
    "single_muscle_acute_painful": ({**SINGLE, "pain": True}, {**SINGLE, "pain": True, "acute_onset": False}),
    "single_muscle_painless_chronic": ({**SINGLE, "acute_onset": False}, {**SINGLE, "acute_onset": False, "pain": True}),
    "diffuse_unilateral_enlargement": ({"affected_side": "right", "n_enlarged_affected_side": 4.0},
                                       {"affected_side": "right", "n_enlarged_affected_side": 4.0,
                                        "n_fatty_affected_side": 1.0}),
    "swelling_without_muscle_change": ({"girth_diff_abs_cm": 3.0}, {"girth_diff_abs_cm": 3.0, "n_affected_right": 2.0}),
    "wells_calf_swelling": ({"girth_diff_abs_cm": 3.5}, {"girth_diff_abs_cm": 2.5}),
    "clinical_oedema": ({"oedema_clinical": True}, {"oedema_clinical": True, **TERRITORY}),
    "acute_painful_swelling": ({"pain": True}, {**SINGLE, "pain": True}),
    "chronic_course": ({"acute_onset": False}, {}),
}


def _derived(values: dict) -> Derived:
    d = Derived()
    for k in SYMBOLS:
        d.put(k, values.get(k, BASELINE[k]), "absent in this test")
    return d


def _fired(values: dict, ruleset=None) -> set[str]:
    return {r["id"] for r in evaluate(ruleset or load_rules(), _derived({**BASELINE, **values}))["fired_rules"]}


def test_baseline_fires_nothing_and_every_rule_has_a_case():
    assert _fired({}) == set()
    assert {r.id for r in load_rules().rules} == set(CASES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires(rule_id: str):
    assert rule_id in _fired(CASES[rule_id][0])


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_stays_silent(rule_id: str):
    assert rule_id not in _fired(CASES[rule_id][1])


def test_missing_inputs_make_rules_not_evaluable_with_the_reason():
    d = _derived(BASELINE)
    d.put("ck_x_uln", None, "CK not given")
    res = evaluate(load_rules(), d)
    entry = next(r for r in res["not_evaluable_rules"] if r["id"] == "ck_normal")
    assert entry["missing"] == {"ck_x_uln": "CK not given"}


def test_a_hypothesis_none_of_whose_rules_could_be_evaluated_has_no_score():
    """Every input missing: every hypothesis is unscored (None, not 0) and the decision is "not evaluable". Only the
    rules of one hypothesis evaluable: that hypothesis has a number, the others None, ranked after it."""
    ruleset = load_rules()
    nothing = Derived()
    for k in SYMBOLS:
        nothing.put(k, None, "withheld in this test")
    res = evaluate(ruleset, nothing)
    assert res["decision"]["status"] == "not evaluable"
    assert set(res["scores"]) == set(ruleset.hypotheses) and all(v is None for v in res["scores"].values())
    rule = next(r for r in ruleset.rules if len(r.points) == 1)
    (only,) = rule.points
    scored = {r.id for r in ruleset.rules if only in r.points}
    some = Derived()
    for k in SYMBOLS:
        needed = any(k in r.requires for r in ruleset.rules if r.id in scored)
        others = any(k in r.requires for r in ruleset.rules if r.id not in scored)
        some.put(k, BASELINE[k] if needed and not others else None, "withheld in this test")
    res = evaluate(ruleset, some)
    evaluated = {r["id"] for r in res["fired_rules"] + res["not_fired_rules"]}
    assert evaluated and evaluated <= scored
    numbers = [h for h, v in res["scores"].items() if v is not None]
    assert only in numbers and list(res["scores"])[:len(numbers)] == numbers


def _broken(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(RULES.read_text())
    edit(data)
    p = tmp_path / "rules.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["rules"][2].update(when="territory_fit and and"), "true_hypertrophy_in_territory"),
    (lambda d: d["rules"][0].update(when="calf_size > 3"), "calf_girth_asymmetry': unknown field 'calf_size'"),
    (lambda d: d["rules"][1]["points"].update(gout=2), "single_root_territory' gives points to unknown hypothesis"),
    (lambda d: d["rules"][3].pop("reference"), "rules[3]"),
    (lambda d: d["rules"][4].update(requires=["nonsense"]), "concordant_spine_narrowing' requires unknown"),
])
def test_malformed_rules_fail_at_load_naming_the_rule(tmp_path: Path, edit, message: str):
    with pytest.raises(ConfigError) as exc:
        load_rules(_broken(tmp_path, edit))
    assert message in str(exc.value)


def test_clinical_validation_names_the_field(tmp_path: Path):
    p = tmp_path / "clinical.yaml"
    p.write_text("reflexes: {ankle: {left: 2, right: 7}}\nemg: [{root: L5, side: middle, finding: chronic_neurogenic}]\n")
    with pytest.raises(BadInputError) as exc:
        load_clinical(p)
    msg = str(exc.value)
    assert "reflexes.ankle.right" in msg and "emg.0.side" in msg and str(p) in msg


def test_clinical_schema_file_matches_the_model():
    committed = yaml.safe_load((DEFAULT_CONFIG_DIR / "schemas" / "clinical.schema.yaml").read_text())
    generated = Clinical.model_json_schema()
    assert committed["properties"] == json.loads(json.dumps(generated["properties"]))


@pytest.fixture(scope="module")
def gt_outputs(tmp_path_factory):
    """Each sample study ingested and measured with its ground-truth label maps (calf and spine)."""
    from pipeline.io.study import ingest_study

    outs = {}
    for case in ("nmh_case", "control", "myopathic"):
        st, out = SAMPLE / case, tmp_path_factory.mktemp(case)
        ingest_study(st, out)
        (out / "calf").mkdir()
        (out / "spine").mkdir()
        shutil.copy(st / "ground_truth" / "calf_labels.nii.gz", out / "calf" / "labels.nii.gz")
        shutil.copy(st / "ground_truth" / "lumbar_sag_t2_labels.nii.gz", out / "spine" / "labels_sag.nii.gz")
        for role, name in (("lumbar_ax_t2", "labels_ax"), ("lumbar_ax_t2_2", "labels_ax_2"),
                           ("lumbar_ax_t2_3", "labels_ax_3")):
            shutil.copy(st / "ground_truth" / f"{role}_labels.nii.gz", out / "spine" / f"{name}.nii.gz")
        calf_driver.measure(StudyDir(out))
        spine_driver.measure(StudyDir(out))
        outs[case] = out
    return outs


def evaluate_study(out: Path, clinical: Path | None, rules_path: Path | None = None) -> dict:
    """The findings record of the study folder ``out`` (what the rules stage writes to findings.json)."""
    return evaluate_summary(Summary.load(StudyDir(out).summary), clinical, rules_path)


def test_sample_cases_with_and_without_clinical_input(gt_outputs):
    nmh = evaluate_study(gt_outputs["nmh_case"], SAMPLE / "nmh_case" / "clinical.yaml")
    assert nmh["decision"]["hypothesis"] == "neurogenic_hypertrophy"
    assert nmh["decision"]["statement"] == "neurogenic muscle hypertrophy, right S1/L5 territory"
    assert [c["level"] for c in nmh["concordant_spine_findings"]] == ["L4-L5"]
    conc = nmh["concordant_spine_findings"][0]
    assert conc["side"] == "right" and conc["zones"]["lateral_recess"] == ["L5"]
    assert "S1" in conc["zones_explaining"]["central"]
    assert nmh["territory_analysis"]["territory_roots"][0] == "S1"
    fired = {r["id"]: r for r in nmh["fired_rules"]}
    assert fired["ck_normal"]["values"]["ck_x_uln"] == pytest.approx(110 / 170)
    nmh_img = evaluate_study(gt_outputs["nmh_case"], None)
    assert nmh_img["decision"]["hypothesis"] == "neurogenic_hypertrophy"
    assert nmh_img["scores"]["neurogenic_hypertrophy"] < nmh["scores"]["neurogenic_hypertrophy"]
    assert nmh_img["missing_data"]["clinical_input"] and "ck_x_uln" in nmh_img["missing_data"]["clinical"]
    control = evaluate_study(gt_outputs["control"], SAMPLE / "control" / "clinical.yaml")
    assert control["decision"]["hypothesis"] is None
    assert control["decision"]["status"] == "no hypothesis above threshold"
    assert evaluate_study(gt_outputs["control"], None)["decision"]["hypothesis"] is None
    myo = evaluate_study(gt_outputs["myopathic"], SAMPLE / "myopathic" / "clinical.yaml")
    assert myo["decision"]["hypothesis"] == "myopathic"
    myo_img = evaluate_study(gt_outputs["myopathic"], None)
    assert myo_img["scores"]["myopathic"] < myo["scores"]["myopathic"]


def test_threshold_in_yaml_changes_the_outcome(gt_outputs, tmp_path: Path):
    strict = _broken(tmp_path, lambda d: d["thresholds"]["enlarged_volume_ai_pct"].update(value=60))
    res = evaluate_study(gt_outputs["nmh_case"], SAMPLE / "nmh_case" / "clinical.yaml", strict)
    assert "true_hypertrophy_in_territory" not in {r["id"] for r in res["fired_rules"]}
    stricter = _broken(tmp_path, lambda d: d["decision"].update(min_score=40))
    res = evaluate_study(gt_outputs["nmh_case"], SAMPLE / "nmh_case" / "clinical.yaml", stricter)
    assert res["decision"]["hypothesis"] is None


def test_cli_rules(gt_outputs, tmp_path: Path, capsys):
    out = gt_outputs["myopathic"]
    assert main(["rules", str(out), "--clinical", str(SAMPLE / "myopathic" / "clinical.yaml")]) == 0
    assert json.loads((out / "findings.json").read_text())["decision"]["hypothesis"] == "myopathic"
    strict = _broken(tmp_path, lambda d: d["decision"].update(min_score=100))
    assert main(["rules", str(out), "--clinical", str(SAMPLE / "myopathic" / "clinical.yaml"), "--rules",
                 str(strict)]) == 0
    assert json.loads((out / "findings.json").read_text())["decision"]["status"] == "no hypothesis above threshold"
    bad = tmp_path / "clinical.yaml"
    bad.write_text("labs: {ck_u_l: -5}\n")
    assert main(["rules", str(out), "--clinical", str(bad)]) == 3
    assert "labs.ck_u_l" in capsys.readouterr().err


def test_findings_do_not_depend_on_the_process_hash_seed(gt_outputs, tmp_path: Path):
    """Two processes with different string-hash seeds write byte-identical findings, with and without clinical
    findings (a set's iteration order follows the seed; nothing written may)."""
    import os
    import subprocess
    import sys

    no_clinical = tmp_path / "study_without_clinical"
    no_clinical.mkdir()
    for clinical in (None, SAMPLE / "control" / "clinical.yaml"):
        texts = []
        for seed in ("1", "2"):
            out = tmp_path / f"{seed}_{clinical is None}"
            shutil.copytree(gt_outputs["control"], out)
            index = json.loads((out / "series.json").read_text())
            (out / "series.json").write_text(json.dumps({**index, "study": str(no_clinical)}))
            env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SAMPLE.parent)}
            extra = ["--clinical", str(clinical)] if clinical else []
            subprocess.run([sys.executable, "-m", "pipeline.cli", "rules", str(out), "-q", *extra], env=env,
                           check=True)
            texts.append((out / "findings.json").read_text())
        assert texts[0] == texts[1]


def _summary(fatty: dict[str, list[str]], enlarged: dict[str, tuple[float, float]], spine: dict) -> Summary:
    """A summary with the contract keys: every calf muscle normal (FF 5 %, symmetric) unless listed.

    ``fatty``: side -> muscles with FF 80 %; ``enlarged``: muscle -> (volume AI %, lean volume AI %), signed R - L.
    """
    s = Summary()
    s.set("calf.available", True)
    s.set("calf.legs_present", "left,right")
    s.set("calf.asymmetry.girth_diff_cm", 0.3)
    for m in load_config("innervation")["muscles"]:
        for side in ("left", "right"):
            s.set(f"calf.{side}.{m}.ff_pct", 80.0 if m in fatty.get(side, []) else 5.0)
        ai, lean = enlarged.get(m, (1.0, 1.0))
        s.set(f"calf.asymmetry.{m}.volume_ai_pct", ai)
        s.set(f"calf.asymmetry.{m}.lean_volume_ai_pct", lean)
    s.set("spine.available", bool(spine))
    for k, v in spine.items():
        s.set(k, v)
    return s


@pytest.mark.parametrize("side,other,sign", [("right", "left", 1.0), ("left", "right", -1.0)])
def test_territory_analysis_and_spine_concordance_from_a_built_summary(side, other, sign, tmp_path: Path):
    ruleset = load_rules()
    s = _summary({side: ["gastrocnemius_medial"]}, {"soleus": (sign * 30.0, sign * 25.0)},
                 {"spine.L4-L5.central_grade": "relative", f"spine.L4-L5.{side}.lateral_recess_grade": "narrowed",
                  "spine.L4-L5.dsca_mm2": 90.0})
    d = derive(s, None, load_config("innervation"), ruleset.thresholds)
    assert d.values["affected_side"] == side
    assert d.territory["affected_muscles"] == {side: ["gastrocnemius_medial", "soleus"], other: []}
    assert list(d.values["territory_roots"]) == ["S1", "S2"]
    assert d.values["n_true_hypertrophy"] == 1 and d.values["n_complete_fatty_affected_side"] == 1
    # no roots_at_risk keys in this summary: concordance comes from the zone grades and innervation.yaml
    assert list(d.values["spine_concordant_levels"]) == ["L4-L5"]
    s.save(tmp_path / "summary.json")
    rec = evaluate_study(tmp_path, None)
    assert rec["decision"]["hypothesis"] == "neurogenic_hypertrophy"
    assert rec["decision"]["statement"].startswith(f"neurogenic muscle hypertrophy, {side} S1")
    (conc,) = rec["concordant_spine_findings"]
    assert conc["side"] == side and conc["zones_explaining"] == {"central": ["S1", "S2"]}
    assert "ck_x_uln" in rec["missing_data"]["clinical"] and rec["missing_data"]["clinical_input"]
    # the same narrowing on the other side only, without central stenosis, explains nothing
    s2 = _summary({side: ["gastrocnemius_medial"]}, {"soleus": (sign * 30.0, sign * 25.0)},
                  {"spine.L4-L5.central_grade": "normal", f"spine.L5-S1.{other}.lateral_recess_grade": "narrowed"})
    d2 = derive(s2, None, load_config("innervation"), ruleset.thresholds)
    assert d2.values["spine_concordant"] is False and d2.values["affected_side"] == side


def test_bilateral_multi_root_and_pseudohypertrophy_from_a_built_summary():
    fat = ["gastrocnemius_medial", "tibialis_anterior", "peroneus"]
    s = _summary({"left": fat, "right": fat}, {"gastrocnemius_medial": (20.0, 0.0)}, {})
    d = derive(s, None, load_config("innervation"), load_rules().thresholds)
    assert d.values["affected_side"] == "" and d.values["territory_fit"] is False
    assert d.values["n_fatty_bilateral"] == 3 and d.values["n_roots_bilateral"] == 3  # S1, L4, L5
    assert d.values["n_pseudohypertrophy"] == 1 and d.values["n_true_hypertrophy"] == 0
    assert d.values["spine_concordant"] is None and "spine_concordant" in d.missing
    s.set_null("calf.left.soleus.ff_pct", "soleus not segmented on the left")
    gaps = findings(s, None, load_rules())["missing_data"]["summary"]
    assert gaps == {"calf.left.soleus.ff_pct": "soleus not segmented on the left",
                    "spine.available": "no spine measurements"}


ALL_MUSCLES = list(load_config("innervation")["muscles"])


@pytest.mark.parametrize("enlarged,girth_cm,clinical,expected", [
    # the whole right calf swollen (every muscle larger, no fat), acute, painful, oedematous
    ({m: (20.0, 20.0) for m in ALL_MUSCLES}, 3.5, {"onset": "acute", "pain": {"present": True}, "oedema": True},
     "venous_or_dvt"),
    # one muscle enlarged, acute and painful
    ({"gastrocnemius_medial": (40.0, 40.0)}, 2.5, {"onset": "acute", "pain": {"present": True}, "oedema": True},
     "focal_myositis"),
    # one muscle enlarged, painless and chronic
    ({"gastrocnemius_medial": (40.0, 40.0)}, 2.5, {"onset": "chronic", "pain": {"present": False}, "oedema": False},
     "mass_or_other"),
])
def test_other_hypotheses_from_built_summaries(enlarged, girth_cm, clinical, expected):
    s = _summary({}, enlarged, {})
    s.set("calf.asymmetry.girth_diff_cm", girth_cm)
    rec = findings(s, Clinical.model_validate(clinical), load_rules())
    assert rec["decision"]["hypothesis"] == expected, rec["scores"]
    assert rec["scores"]["neurogenic_hypertrophy"] < rec["scores"][expected]


def test_contralateral_tolerance_and_territory_outliers():
    thr = load_rules().thresholds
    inn = load_config("innervation")
    nmh_like = {"soleus": (30.0, 25.0), "extensor_digitorum_longus": (-20.0, -20.0)}  # EDL larger on the left
    d = derive(_summary({"right": ["gastrocnemius_medial"]}, nmh_like, {}), None, inn, thr)
    assert d.values["affected_side"] == "right" and d.territory["contralateral_tolerated"] == ["extensor_digitorum_longus"]
    assert d.values["territory_fit"] and list(d.values["territory_roots"]) == ["S1", "S2"]
    # two enlarged muscles on the other side (as many as on the affected side) are tolerated: the fatty side ranks first
    two = {**nmh_like, "flexor_hallucis_longus": (-20.0, -20.0)}
    d = derive(_summary({"right": ["gastrocnemius_medial"]}, two, {}), None, inn, thr)
    assert d.values["affected_side"] == "right"
    d = derive(_summary({"right": ["gastrocnemius_medial"]}, two, {}), None, inn,
               {**thr, "contralateral_tolerance_muscles": 1.0})
    assert d.values["affected_side"] == ""
    # a fatty muscle on the other side is not tolerated
    d = derive(_summary({"right": ["gastrocnemius_medial"], "left": ["peroneus"]}, {"soleus": (30.0, 25.0)}, {}),
               None, inn, thr)
    assert d.values["affected_side"] == ""
    # an abnormal muscle outside the shared root breaks the territory unless the rules file allows an outlier
    s = _summary({"right": ["gastrocnemius_medial"]}, {"soleus": (30.0, 25.0), "tibialis_anterior": (25.0, 25.0)}, {})
    d = derive(s, None, inn, thr)
    assert d.values["affected_side"] == "right" and not d.values["territory_fit"]
    assert d.territory["outside_territory"] == ["tibialis_anterior"]
    d = derive(s, None, inn, {**thr, "territory_outlier_muscles": 1.0})
    assert d.values["territory_fit"] and list(d.values["territory_roots"]) == ["S1", "S2"]


def test_requires_defaults_to_the_symbols_of_the_condition(tmp_path: Path):
    def edit(d):
        rule = next(r for r in d["rules"] if r["id"] == "acute_painful_swelling")
        rule.pop("requires")
        rule["when"] = "pain and acute_onset"

    rule = next(r for r in load_rules(_broken(tmp_path, edit)).rules if r.id == "acute_painful_swelling")
    assert rule.requires == ["acute_onset", "pain"]


def test_spinal_levels_follow_the_root_anatomy():
    """Disc level Lx-Ly: exiting (foraminal) root Lx, traversing (lateral recess) root Ly, central: Ly down to S2."""
    order = ["L1", "L2", "L3", "L4", "L5", "S1", "S2"]
    inn = load_config("innervation")
    assert set(inn["spinal_levels"]) == {"L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"}
    for level, zones in inn["spinal_levels"].items():
        upper, lower = level.split("-")
        assert zones["foramen"] == [upper] and zones["lateral_recess"] == [lower]
        assert zones["central"] == order[order.index(lower):]
    for m, entry in inn["muscles"].items():
        assert set(entry["roots"]) <= set(inn["roots"]), m


def test_values_of_a_segmentation_that_failed_qc_are_not_used(gt_outputs, tmp_path: Path):
    """The index case decides neurogenic hypertrophy from calf values; with its calf QC failed, the same summary
    decides nothing from the calf and the findings say which values were held back."""
    s = Summary.load(StudyDir(gt_outputs["nmh_case"]).summary)
    assert s.get("calf.qc_status") == "pass"  # the true label maps pass QC
    s.set("calf.qc_status", "fail")
    s.set("calf.qc_reasons", "right leg: not a calf")
    s.save(tmp_path / "summary.json")
    rec = evaluate_study(tmp_path, SAMPLE / "nmh_case" / "clinical.yaml")
    assert rec["decision"]["hypothesis"] != "neurogenic_hypertrophy"
    held = rec["quality_control"]["held_back"]
    assert "calf.right.soleus.volume_ml" in held and "calf.asymmetry.soleus.volume_ai_pct" in held
    assert rec["quality_control"]["caveats"]
    assert rec["territory_analysis"]["affected_muscles"] == {"left": [], "right": []}  # no calf value was read
    # ... and nothing is concluded from them: the counts are unknown, not 0, and the rules on them not evaluable
    assert rec["derived_inputs"]["n_fatty_bilateral"] is None and rec["derived_inputs"]["n_affected_side"] is None
    not_evaluable = {r["id"]: r["missing"] for r in rec["not_evaluable_rules"]}
    assert {"pseudohypertrophy", "fatty_change_in_territory", "single_root_territory"} <= set(not_evaluable)
    assert "calf segmentation failed QC" in not_evaluable["pseudohypertrophy"]["n_fatty_bilateral"]
    assert not {"pseudohypertrophy", "fatty_change_in_territory"} & {r["id"] for r in rec["not_fired_rules"]}
    # without clinical findings no rule has all its inputs here: the decision says so, not "below threshold"
    bare = evaluate_study(tmp_path, None)
    assert bare["decision"]["status"] == "not evaluable" and not bare["fired_rules"] and not bare["not_fired_rules"]
    # one failed structure holds back that structure and its asymmetry, nothing else
    s = Summary.load(StudyDir(gt_outputs["nmh_case"]).summary)
    s.set("calf.qc_status", "review")
    s.set("calf.right.gastrocnemius_medial.qc_status", "fail")
    s.set("calf.right.gastrocnemius_medial.qc_reasons", "in pieces")
    s.save(tmp_path / "summary.json")
    rec = evaluate_study(tmp_path, SAMPLE / "nmh_case" / "clinical.yaml")
    held = rec["quality_control"]["held_back"]
    assert "calf.right.gastrocnemius_medial.ff_pct" in held and "calf.left.gastrocnemius_medial.ff_pct" not in held
    assert "calf.right.soleus.volume_ml" not in held
