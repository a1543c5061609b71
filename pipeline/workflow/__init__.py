"""Orchestration: the stages of one study in order, the batch runner, training/evaluation drivers and Snakemake."""
