"""``harness evaluate`` (harness.experiment.evaluate): every key it writes against the instruments
called by hand on the same embeddings, its defaults, its metadata and its command line.

The runs are untrained encoders written straight to a run folder (no training): evaluation only
reads the weights, so any weights serve, and an untrained model keeps every metric away from its
saturated ends.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math

import numpy as np
import pytest
import torch
from test_runs import write_run_by_hand

import objectives
from harness.experiment import data as hd
from harness.experiment import evaluate, runs
from harness.experiment.dataset import write_dataset
from harness.experiment.metrics import (
    conflict_summaries,
    flatten_metrics,
    linear_probe,
    own_retrieval_metrics,
    retrieval_metrics,
)
from harness.files import OutputError
from harness.instruments import conflicts, divergence, gap
from harness.instruments._inputs import sample_rows

SEED = 3  # the runs' training seed; the dataset's own seed is 1
INFONCE = {"temperature": 0.2, "chunk_size": None}  # not in sorted order: meta/params sorts them


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An 80-row, 3-modality dataset (12 test and 12 validation rows) and two runs on it."""
    out = tmp_path_factory.mktemp("evaluate")
    hd.build_synthetic(out / "data", hd.SyntheticConfig(n_modalities=3, n_samples=80, n_classes=3, latent_dim=3,
                                                        dims=[5, 4, 3], seed=1))
    write_run_by_hand(out / "infonce", out / "data", params=dict(INFONCE), seed=SEED)
    write_run_by_hand(out / "symile", out / "data", objective="symile", params={"negatives": "n"}, seed=SEED,
                      extra={"epochs": None, "steps": 9})
    return out


def reference(run, split="test", temperature=0.07, max_rows=2048, probes=True) -> dict:
    """What evaluation must write, from the instruments called one by one."""
    cfg, model, loss_fn, ds = runs.load_run(run)
    M = cfg["n_modalities"]
    rows, tr = ds.split(split), ds.split("train")

    def embed(idx):
        return model.embed([torch.from_numpy(ds.standardized(m, idx)) for m in range(M)])

    zs, zs_tr = embed(rows), embed(tr)
    rule = {"symile": "symile_mip", "gram": "gram_volume"}.get(cfg["objective"], "cosine_sum")
    out = {f"retrieval/{k}": v for k, v in retrieval_metrics(zs).items()}
    out.update({f"retrieval_own/{k}": v for k, v in own_retrieval_metrics(zs, rule).items()})
    if probes:
        accs = [linear_probe(zs_tr[m].numpy(), ds.labels[tr], zs[m].numpy(), ds.labels[rows]) for m in range(M)]
        out.update({f"probe/acc/{m}": a for m, a in enumerate(accs)})
        out["probe/acc/mean"] = sum(accs) / M
    idx = sample_rows(len(rows), max_rows, SEED)
    sub = [z[idx] for z in zs]
    out["meta/instrument_rows"] = len(idx)
    out["meta/instrument_sample"] = "all" if len(idx) == len(rows) else "seeded"
    with torch.no_grad():
        out.update(flatten_metrics("gap", gap.modality_gap(zs)))
        out["divergence/holder"] = float(divergence.holder(sub, bandwidth="median"))
        est = float(divergence.holder(sub, bandwidth=1.0))
        null = divergence.holder_null([torch.cat([zs_tr[m], zs[m]]) for m in range(M)], M, len(sub[0]), 1.0,
                                      seed=SEED)
        out.update({"divergence/holder_fixed/estimate": est, "divergence/holder_fixed/h": 1.0,
                    "divergence/holder_fixed/null_mean": null["mean"], "divergence/holder_fixed/null_sd": null["sd"],
                    "divergence/holder_fixed/null_q95": null["q95"], "divergence/holder_fixed/null_n": null["n"],
                    "divergence/holder_fixed/null_size": null["size"],
                    "divergence/holder_fixed/excess": est - null["mean"]})
        cs = [float(divergence.cauchy_schwarz(sub[m], sub[n], bandwidth="median"))
              for m, n in ((0, 1), (0, 2), (1, 2))[: M * (M - 1) // 2]]
        out["divergence/cs_pairwise_mean"] = sum(cs) / len(cs)
        proxy = divergence.proxy_bound(sub, bandwidth="median", anchor=0)
        for k, v in proxy.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"divergence/proxy/{k}"] = float(v)
        out["divergence/proxy/guaranteed"] = proxy["guaranteed"]
        out["divergence/proxy/estimator"] = proxy["estimator"]
        out.update(conflict_summaries("conflict", conflicts.infonce_conflicts(sub, temperature, 0)))
    torch.manual_seed(SEED)
    with objectives.no_gather():
        out.update(conflict_summaries("conflict/grad", conflicts.gradient_conflicts(loss_fn, sub, anchor=0)))
    out.update(runs.run_meta(cfg))
    return out


def assert_same(actual: dict, expected: dict) -> None:
    """Equal keys and values (NaN equals NaN); the provenance date may tick between two calls."""
    assert sorted(actual) == sorted(expected)
    for k, v in expected.items():
        if k == "meta/provenance/date_utc":
            continue
        a = actual[k]
        same = a == v or (isinstance(v, float) and math.isnan(v) and isinstance(a, float) and math.isnan(a))
        assert same and type(a) is type(v), (k, a, v)


def test_evaluate_run_defaults_against_the_instruments(base):
    torch.manual_seed(123)
    out = evaluate.evaluate_run(base / "infonce", max_rows=10)
    # evaluation seeds torch's generator with the run's seed (and draws nothing more for InfoNCE)
    assert torch.initial_seed() == SEED
    ds = hd.load_dataset(base / "data")
    meta = {"meta/dataset": "synthetic", "meta/objective": "infonce", "meta/n_modalities": 3, "meta/seed": SEED,
            "meta/split_seed": 1, "meta/retrieval_rule": "cosine_sum", "meta/split": "test", "meta/n_eval": 12, "meta/n_eval_below_min": True,
            "meta/modality_names": "syn0,syn1,syn2", "meta/params": '{"chunk_size": null, "temperature": 0.2}',
            "meta/data_sha256": ds.meta["sha256"], "meta/conflict_temperature": 0.07, "meta/epochs": 1,
            "meta/steps": None, "meta/param/temperature": 0.2, "meta/param/chunk_size": None}
    assert {k: out[k] for k in meta} == meta
    assert_same(out, {**reference(base / "infonce", "test", 0.07, 10), **meta})
    # 12 test rows, 10 of them in the row-capped statistics; probes on all of them
    assert out["divergence/holder_fixed/null_size"] == 10 and {"probe/acc/0", "probe/acc/mean"} <= set(out)
    assert out["probe/acc/mean"] == pytest.approx(np.mean([out[f"probe/acc/{m}"] for m in range(3)]))
    assert out["meta/model_sha256"] == hashlib.sha256((base / "infonce" / "model.pt").read_bytes()).hexdigest()


def test_evaluate_run_split_temperature_rows_and_no_probes(base):
    torch.rand(5)  # whatever ran before, the random negatives are the run seed's
    out = evaluate.evaluate_run(base / "symile", split="val", temperature=0.2, max_rows=5, probes=False)
    assert not any(k.startswith("probe/") for k in out)
    meta = {"meta/dataset": "synthetic", "meta/objective": "symile", "meta/n_modalities": 3, "meta/seed": SEED,
            "meta/split_seed": 1, "meta/retrieval_rule": "symile_mip", "meta/split": "val", "meta/n_eval": 12, "meta/n_eval_below_min": False,
            "meta/modality_names": "syn0,syn1,syn2", "meta/params": '{"negatives": "n"}',
            "meta/conflict_temperature": 0.2, "meta/epochs": None, "meta/steps": 9, "meta/param/negatives": "n"}
    assert {k: out[k] for k in meta} == meta
    assert out["divergence/holder_fixed/null_size"] == 5
    assert_same(out, {**reference(base / "symile", "val", 0.2, 5, probes=False), **meta})


def test_split_seed_fallbacks_and_non_scalar_parameters(base, monkeypatch):
    real = evaluate.load_run

    def loading(edit):
        def load_run(run_dir):
            cfg, model, loss_fn, ds = real(run_dir)
            edit(cfg, ds.meta)
            return cfg, model, loss_fn, ds
        monkeypatch.setattr(evaluate, "load_run", load_run)

    def split_seed_7(cfg, meta):
        meta["split_seed"] = 7
        cfg["params"] = {**cfg["params"], "weights": [1, 2], "table": {"b": 1, "a": None}}

    loading(split_seed_7)
    out = evaluate.evaluate_run(base / "infonce", max_rows=4, probes=False)
    assert out["meta/split_seed"] == 7
    assert out["meta/param/weights"] == "[1, 2]" and out["meta/param/table"] == '{"b": 1, "a": null}'
    assert out["meta/param/temperature"] == 0.2 and out["meta/param/chunk_size"] is None
    assert out["meta/params"] == ('{"chunk_size": null, "table": {"a": null, "b": 1}, "temperature": 0.2, '
                                  '"weights": [1, 2]}')
    loading(lambda cfg, meta: meta.pop("seed"))
    assert evaluate.evaluate_run(base / "infonce", max_rows=4, probes=False)["meta/split_seed"] == 0


def _max_rows_probe(monkeypatch):
    """Replace the row-capped instruments by stubs that record how many rows they were given."""
    seen = []
    monkeypatch.setattr(divergence, "cauchy_schwarz", lambda *a, **k: torch.tensor(0.0))
    monkeypatch.setattr(conflicts, "infonce_conflicts", lambda zs, *a, **k: seen.append([z.shape[0] for z in zs]) or {})
    monkeypatch.setattr(divergence, "holder", lambda *a, **k: torch.tensor(0.0))
    monkeypatch.setattr(divergence, "holder_null", lambda *a, **k: {"mean": 0.0, "sd": 0.0, "q95": 0.0, "n": 0,
                                                                    "size": a[2]})
    monkeypatch.setattr(divergence, "proxy_bound", lambda *a, **k: {"estimator": "stub", "guaranteed": False})
    monkeypatch.setattr(conflicts, "gradient_conflicts", lambda *a, **k: {})
    return seen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate")
    evaluate.add_arguments(p)
    return p


def test_default_row_cap_is_2048(tmp_path, monkeypatch):
    # 2049 test rows: the divergence and conflict statistics take a seeded sample of 2048, retrieval and
    # the gap all of them
    rng = np.random.default_rng(0)
    n = 2061
    views = [rng.normal(size=(n, 2)).astype(np.float32) for _ in range(2)]
    idx = np.arange(n)
    splits = {"train": idx[:10], "val": idx[10:12], "test": idx[12:]}
    write_dataset(tmp_path / "data", views, views[0], np.arange(n) % 2, splits, {"dataset": "wide", "seed": 0})
    write_run_by_hand(tmp_path / "run", tmp_path / "data", n_modalities=2, dim=2, hidden=4, depth=0,
                      params=dict(INFONCE))
    seen = _max_rows_probe(monkeypatch)
    out = evaluate.evaluate_run(tmp_path / "run")
    assert seen == [[2048, 2048]] and out["meta/n_eval"] == 2049
    assert out["meta/instrument_rows"] == 2048 and out["meta/instrument_sample"] == "seeded"
    args = parser().parse_args(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.json")])
    threads = recorded_threads(monkeypatch)
    assert evaluate.main(args) == 0 and threads == [1]
    assert seen[1] == [2048, 2048] and json.loads((tmp_path / "m.json").read_text())["meta/n_eval"] == 2049


# ----------------------------------------------------------------------------- the command line


def test_arguments_defaults_choices_and_help():
    p = parser()
    args = p.parse_args(["--run", "r", "--out", "o.json"])
    assert (args.run, args.out, args.split, args.temperature, args.max_rows, args.threads) == (
        "r", "o.json", "test", 0.07, 2048, 1)
    for split in ("train", "val", "test"):
        assert p.parse_args(["--run", "r", "--out", "o", "--split", split]).split == split
    args = p.parse_args(["--run", "r", "--out", "o", "--temperature", "0.5", "--max-rows", "7"])
    assert args.temperature == 0.5 and type(args.temperature) is float
    assert args.max_rows == 7 and type(args.max_rows) is int
    for bad in (["--out", "o"], ["--run", "r"], ["--run", "r", "--out", "o", "--split", "all"],
                ["--run", "r", "--out", "o", "--temperature", "0"],
                ["--run", "r", "--out", "o", "--max-rows", "0"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    text = " ".join(p.format_help().split())
    for line in ("--run RUN run folder from `python -m harness train`", "--out OUT output JSON file",
                 "--temperature TEMPERATURE temperature of the InfoNCE conflict statistics",
                 "--max-rows MAX_ROWS rows used for divergence/conflict statistics", "--split {train,val,test}",
                 "--threads THREADS"):
        assert line in text, line


def recorded_threads(monkeypatch) -> list[int]:
    """Record the thread counts asked of torch instead of changing the process's pool: a process
    forked after a parallel region must not start one."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    return calls


def test_main_writes_the_metrics_and_one_line(base, tmp_path, capsys, monkeypatch):
    threads = recorded_threads(monkeypatch)
    out = tmp_path / "m.json"
    args = parser().parse_args(["--run", str(base / "infonce"), "--out", str(out), "--split", "val",
                                "--temperature", "0.2", "--max-rows", "5", "--threads", "3"])
    assert evaluate.main(args) == 0
    assert threads == [3]
    expected = evaluate.evaluate_run(base / "infonce", "val", 0.2, 5)
    written = json.loads(out.read_text())
    # the file carries its content hash (aggregation refuses an edited file): it matches the rest
    from harness.files import CONTENT_KEY, check_seal

    check_seal(written, out)
    written.pop(CONTENT_KEY)
    assert_same(written, json.loads(json.dumps(expected)))
    assert written["meta/split"] == "val" and written["meta/conflict_temperature"] == 0.2
    assert written["divergence/holder_fixed/null_size"] == 5
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == (
        f"wrote {out}: R@1 mean {written['retrieval/R1/mean']:.1f}, own-rule (cosine_sum) "
        f"{written['retrieval_own/R1/mean']:.1f}, divergence/holder_fixed/excess "
        f"{written['divergence/holder_fixed/excess']:.4f} (nats over the same-distribution null)\n")


def test_main_reports_a_missing_run_or_split_on_one_line(tmp_path, base, capsys):
    out = tmp_path / "m.json"
    missing = tmp_path / "missing"
    assert evaluate.main(parser().parse_args(["--run", str(missing), "--out", str(out)])) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"error: {missing / 'model.pt'} does not exist; train first with `python -m harness train --out {missing}`\n")
    args = parser().parse_args(["--run", str(base / "infonce"), "--out", str(out)])
    args.split = "all"
    assert evaluate.main(args) == 1
    assert capsys.readouterr().err == "error: unknown split 'all'; available: ['test', 'train', 'val']\n"
    assert not out.exists()
    # an output path that cannot be written is refused before any work
    with pytest.raises(OutputError, match="is a folder; a file is expected"):
        evaluate.main(parser().parse_args(["--run", str(missing), "--out", str(tmp_path)]))


def test_a_run_without_a_recorded_data_hash_names_the_data_it_read(base, tmp_path):
    """Older runs recorded no data hashes (only the weights'); the metrics still name the dataset and split that were evaluated."""
    run = tmp_path / "old"
    write_run_by_hand(run, base / "data", params=dict(INFONCE), seed=SEED, hashes=(), record_data_sha256=False)
    out = evaluate.evaluate_run(run, probes=False)
    ds = hd.load_dataset(base / "data")
    assert out["meta/data_sha256"] == ds.meta["sha256"] and out["meta/split_sha256"] == ds.split_sha256
