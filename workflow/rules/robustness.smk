# Robustness of the verdicts: each declared perturbation (robustness.perturbations: an overlay on this
# configuration) is swept as its own workflow under robustness/<name>/, cut by the plan to what the
# primary verdicts read (harness.plan.Plan.robustness_config); the claims rule puts its verdicts
# beside the main ones (results/robustness.csv and a section of claims.md).
# with robustness.sweep, a perturbation config that is not the one in force is rewritten here (also
# in a dry run), so its nested sweep runs again: see Plan.refresh_robustness_configs
PLAN.refresh_robustness_configs()


rule robustness_config:
    output:
        out("robustness/{perturbation}/config.yaml"),
    params:
        # the perturbation's whole configuration: a change to it reruns the rule (params trigger)
        text=lambda wildcards: PLAN.robustness_config_text(wildcards.perturbation),
    wildcard_constraints:
        perturbation="[A-Za-z0-9_.-]+",
    log:
        out("logs/robustness/{perturbation}.config.log"),
    run:
        from harness.files import atomic_write_text

        atomic_write_text(output[0], params.text)
        atomic_write_text(log[0], f"wrote {output[0]}\n")


rule robustness_sweep:
    input:
        config=out("robustness/{perturbation}/config.yaml"),
    output:
        claims=out("robustness/{perturbation}/results/claims.csv"),
    params:
        # Snakemake itself, from the interpreter running this workflow (a rule's conda python lacks it)
        python=sys.executable,
        snakefile=workflow.main_snakefile,
        workdir=os.getcwd(),
    wildcard_constraints:
        perturbation="[A-Za-z0-9_.-]+",
    # every core: Snakemake lowers a rule's threads to --cores (workflow.cores is unset in a dry run)
    threads: 1024
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/robustness/{perturbation}.log"),
    # the target first (--configfile takes every argument after it); --nolock: this workflow holds
    # the working directory's lock, and the two write disjoint folders
    shell:
        "{params.python:q} -m snakemake {output.claims:q} -s {params.snakefile:q} --directory {params.workdir:q}"
        " --cores {threads} --nolock --configfile {input.config:q} > {log:q} 2>&1"
