"""The Snakemake workflow: a first run makes every study's outputs and the index; editing a threshold in a copy of
rules.yaml reruns only the rules and report jobs (and the index); adding a study runs only that study."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline.core.config import DEFAULT_CONFIG_DIR
from pipeline.workflow.snakemake import run_workflow, snakemake_command
from tests.report.study_fixture import small_study

STAGE_OUTPUTS = {"ingest": "series.json", "segment": ".stage_segment.done", "measure": "summary.json",
                 "rules": "findings.json", "report": "report.html"}


def _mtimes(out: Path, study: str) -> dict[str, int]:
    return {stage: (out / study / f).stat().st_mtime_ns for stage, f in STAGE_OUTPUTS.items()}


def _jobs_in_last_log(out: Path) -> list[str]:
    log = sorted((out / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
    return [r for r in re.findall(r"^(?:local)?rule (\w+):", log, flags=re.M) if r != "all"]


def test_command_defaults_to_one_core_unless_given():
    assert "--cores" in snakemake_command(Path("r"), Path("o"))
    cmd = snakemake_command(Path("r"), Path("o"), ["--profile", "p"])
    assert cmd.count("--cores") == 0


def test_threshold_edit_reruns_only_rules_and_report(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    monkeypatch.setenv("LEGMRI_CONFIG_DIR", str(cfg))
    root, out = tmp_path / "studies", tmp_path / "out"
    small_study(root / "knee_a", 1)
    assert run_workflow(root, out, ["--cores", "2"]) == 0
    assert (out / "index.html").exists() and (out / "knee_a" / "report.html").exists()
    assert (out / "logs" / "knee_a" / "segment.log").exists()
    before = _mtimes(out, "knee_a")

    rules_yaml = cfg / "rules.yaml"
    text = rules_yaml.read_text()
    edited = re.sub(r"(min_score:\s*)([0-9.]+)", lambda m: f"{m.group(1)}{float(m.group(2)) + 0.5}", text, count=1)
    assert edited != text, "rules.yaml has no min_score threshold to edit"
    rules_yaml.write_text(edited)
    assert run_workflow(root, out, ["--cores", "2"]) == 0
    assert sorted(_jobs_in_last_log(out)) == ["cohort", "report", "rules"]
    after = _mtimes(out, "knee_a")
    for stage in ("ingest", "segment", "measure"):
        assert after[stage] == before[stage], stage
    for stage in ("rules", "report"):
        assert after[stage] > before[stage], stage

    # a new study runs alone (plus the index); the first study's outputs are untouched
    small_study(root / "knee_b", 2)
    assert run_workflow(root, out, ["--cores", "2"]) == 0
    assert sorted(_jobs_in_last_log(out)) == ["cohort", "ingest", "measure", "report", "rules", "segment"]
    assert _mtimes(out, "knee_a") == after
    assert 'href="./knee_b/report.html"' in (out / "index.html").read_text()


def test_cli_passes_arguments_after_double_dash_to_snakemake(tmp_path: Path):
    from pipeline.cli import main

    root, out = tmp_path / "studies", tmp_path / "out"
    small_study(root / "knee_a", 1)
    assert main(["workflow", str(root), "--out", str(out), "--", "--cores", "1", "--dry-run"]) == 0
    assert not (out / "knee_a" / "series.json").exists()  # a dry run plans the jobs and runs none
