# One rule per stage of one study; outputs follow the study output contract (DESIGN.md). Each calls the legmri CLI.

rule ingest:
    input:
        study_files,
        roles=str(CONFIGS / "series_roles.yaml"),
    output:
        str(OUT / "{study}" / "series.json"),
    params:
        study=study_dir,
        out=lambda wc: str(OUT / wc.study),
    log:
        str(OUT / "logs" / "{study}" / "ingest.log"),
    shell:
        "{LEGMRI} ingest {params.study:q} --out {params.out:q} > {log:q} 2>&1"


rule segment:
    input:
        str(OUT / "{study}" / "series.json"),
        labels=str(CONFIGS / "labels.yaml"),
    output:
        touch(str(OUT / "{study}" / ".stage_segment.done")),
    params:
        out=lambda wc: str(OUT / wc.study),
        device=DEVICE,
    resources:
        # On a SLURM cluster (profiles/slurm) this rule asks for one GPU; locally it is a plain resource.
        gpu=1 if DEVICE.startswith("cuda") else 0,
        mem_mb=8000,
    log:
        str(OUT / "logs" / "{study}" / "segment.log"),
    shell:
        "{LEGMRI} segment {params.out:q} --device {params.device} > {log:q} 2>&1"


rule measure:
    input:
        str(OUT / "{study}" / ".stage_segment.done"),
        default=str(CONFIGS / "default.yaml"),
    output:
        str(OUT / "{study}" / "summary.json"),
    params:
        out=lambda wc: str(OUT / wc.study),
    log:
        str(OUT / "logs" / "{study}" / "measure.log"),
    shell:
        "{LEGMRI} measure {params.out:q} > {log:q} 2>&1"


rule rules:
    input:
        summary=str(OUT / "{study}" / "summary.json"),
        rules=str(CONFIGS / "rules.yaml"),
        innervation=str(CONFIGS / "innervation.yaml"),
        clinical=clinical,
    output:
        str(OUT / "{study}" / "findings.json"),
    params:
        out=lambda wc: str(OUT / wc.study),
        clinical=lambda wc, input: "--clinical " + shlex.quote(input.clinical[0]) if input.clinical else "",
    log:
        str(OUT / "logs" / "{study}" / "rules.log"),
    shell:
        "{LEGMRI} rules {params.out:q} --rules {input.rules:q} {params.clinical} > {log:q} 2>&1"


rule report:
    input:
        str(OUT / "{study}" / "findings.json"),
        cfg=str(CONFIGS / "report.yaml"),
    output:
        str(OUT / "{study}" / "report.html"),
    params:
        out=lambda wc: str(OUT / wc.study),
    log:
        str(OUT / "logs" / "{study}" / "report.log"),
    shell:
        "{LEGMRI} report {params.out:q} > {log:q} 2>&1"
