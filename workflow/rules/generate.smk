# Stage 4: UnCLIP-style generation (cross-modal, upper bound, interpolation) for the variants and
# M listed under `generation:`.


rule generate:
    input:
        runs=out("runs/{dataset}/{job}"),
        data=dataset_files,
    output:
        directory(out("generation/{dataset}/{job}")),
    params:
        cmd=lambda wildcards: batch_shell(generate_commands(wildcards.dataset, wildcards.job)),
    threads: rule_resource("generate", "threads", 1)
    resources:
        mem_mb=rule_resource("generate", "mem_mb", 3000),
        runtime=scaled_runtime("generate", 1.0),
        gpu=rule_resource("generate", "gpu", 0),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/generate/{dataset}/{job}.log"),
    benchmark:
        out("benchmarks/generate/{dataset}/{job}.tsv")
    shell:
        "export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}; {params.cmd} > {log:q} 2>&1"
