# The cohort index over every study: index.html and cohort.csv at the output root.

rule cohort:
    input:
        expand(str(STUDY.report_html), study=sorted(STUDIES)),
    output:
        str(BATCH.index_html),
        str(BATCH.cohort_csv),
    params:
        out=str(OUT),
        configs=configs_of("report"),
    log:
        str(BATCH.logs / "cohort.log"),
    shell:
        "{PYTHON} -m pipeline.workflow.snakemake cohort {params.out:q} > {log:q} 2>&1"
