# Stage 2: training.  One job per (dataset, job): a job is one variant of the main study, or the
# pack of small variants a packed study adds (see common.smk); every M, every (seed, split seed).
# Budget: `training.steps` optimizer steps, validation every `eval_every_steps`, checkpoint chosen
# by `training.select` (best_val: the best validation R@1).  A tuned variant's params come from the
# select_trials checkpoint.  The job's output is its run folder; Snakemake deletes a half-written
# one before a rerun (and --rerun-incomplete, set in profiles/default, reruns jobs killed mid-way).


rule train:
    input:
        data=dataset_files,
        selection=selection_input,
    output:
        directory(out("runs/{dataset}/{job}")),
    params:
        cmd=lambda wildcards: batch_shell(train_commands(wildcards.dataset, wildcards.job)),
    threads: rule_resource("train", "threads", 1)
    resources:
        mem_mb=rule_resource("train", "mem_mb", 3000),
        runtime=scaled_runtime("train", 1.0),
        gpu=rule_resource("train", "gpu", 0),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/train/{dataset}/{job}.log"),
    benchmark:
        out("benchmarks/train/{dataset}/{job}.tsv")
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; {params.cmd} > {log:q} 2>&1"
