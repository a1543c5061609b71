# The cohort index over every study: index.html and cohort.csv at the output root.

rule cohort:
    input:
        expand(str(OUT / "{study}" / "report.html"), study=sorted(STUDIES)),
        cfg=str(CONFIGS / "report.yaml"),
    output:
        str(OUT / "index.html"),
        str(OUT / "cohort.csv"),
    params:
        out=str(OUT),
    log:
        str(OUT / "logs" / "cohort.log"),
    shell:
        "{PYTHON} -m pipeline.workflow.snake cohort {params.out:q} > {log:q} 2>&1"
