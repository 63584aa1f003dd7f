"""Training protocol: step budget, validation cadence, checkpoint selection, convergence flag,
AdamW parameter groups, the logit-scale clamp after the step, the LayerNorm head, and UniAlign's
uniformity reduction."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from reference_losses import REFERENCES, make_zs

import objectives
from harness.cli import main as cli_main
from harness.experiment.models import Encoder, MultiEncoder
from harness.experiment.runs import load_checkpoint, load_run
from harness.experiment.train import parameter_groups, still_improving
from objectives._base import Temperature

torch.set_num_threads(1)

STEPS_PER_EPOCH = 6  # 210 training rows // batch 32


def run(data, out, **kw) -> int:
    args = {"--data": data, "--objective": "infonce", "--n-modalities": 3, "--seed": 0,
            "--batch-size": 32, "--dim": 8, "--hidden": 16, "--depth": 1, "--lr": 3e-3,
            "--weight-decay": 1e-4, "--out": out, "--val-instruments": "core"}
    args.update(kw)
    argv = ["train", "--quiet"]
    for k, v in args.items():
        for item in (v if isinstance(v, list) else [v]):
            argv += [k, str(item)]
    return cli_main(argv)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    return {**saved["model"], **{f"objective.{k}": v for k, v in saved["objective"].items()}}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- budget


def test_epochs_are_converted_to_steps(tiny_data, tmp_path):
    assert run(tiny_data, tmp_path / "e", **{"--epochs": 2, "--eval-every-steps": 4}) == 0
    assert run(tiny_data, tmp_path / "s", **{"--steps": 12, "--eval-every-steps": 4}) == 0
    e, s = tmp_path / "e", tmp_path / "s"
    for f in ("history.csv", "steps.csv"):
        assert (e / f).read_text() == (s / f).read_text(), f
    assert same_weights(weights(e), weights(s))
    info = json.loads((s / "train.json").read_text())
    assert info["steps"] == 12 and info["steps_per_epoch"] == STEPS_PER_EPOCH
    assert info["config"]["steps"] == 12 and info["config"]["epochs"] is None
    assert json.loads((e / "train.json").read_text())["config"]["epochs"] == 2


def test_shuffle_continues_across_epochs(tiny_data, tmp_path):
    """A run of N steps is the first N steps of a longer run, whatever the epoch boundaries."""
    assert run(tiny_data, tmp_path / "short", **{"--steps": 8}) == 0
    assert run(tiny_data, tmp_path / "long", **{"--steps": 15}) == 0
    short = pd.read_csv(tmp_path / "short" / "steps.csv")
    long = pd.read_csv(tmp_path / "long" / "steps.csv")
    assert short["step"].tolist() == list(range(1, 9))
    assert short["epoch"].tolist() == [1] * 6 + [2] * 2
    assert long["epoch"].tolist() == [1] * 6 + [2] * 6 + [3] * 3
    assert short["loss"].tolist() == long["loss"].iloc[:8].tolist()
    # a fresh permutation per epoch: epoch 2 does not repeat epoch 1's batches
    assert long["loss"].iloc[6:12].tolist() != long["loss"].iloc[:6].tolist()


@pytest.mark.parametrize(
    "extra, pattern",
    [
        ({}, r"exactly one training budget, --steps N or --epochs E \(got --steps None, --epochs None\)"),
        ({"--steps": 5, "--epochs": 1}, r"exactly one training budget, .*--steps 5, --epochs 1"),
        ({"--steps": 0}, r"--steps 0 must be a positive integer"),
        ({"--steps": 5, "--eval-every-steps": 2, "--eval-every": 1}, r"at most one validation cadence"),
        ({"--steps": 5, "--eval-every-steps": 0}, r"--eval-every-steps 0 must be a positive integer"),
    ],
)
def test_budget_argument_errors(tiny_data, tmp_path, capsys, extra, pattern):
    import re

    assert run(tiny_data, tmp_path / "r", **extra) == 1
    assert re.search(pattern, capsys.readouterr().err)
    assert not (tmp_path / "r" / "train.json").exists()


# ----------------------------------------------------------------------------- cadence


@pytest.mark.parametrize(
    "budget, expected",
    [
        ({"--steps": 12, "--eval-every-steps": 5}, [5, 10, 12]),
        ({"--steps": 20}, list(range(2, 21, 2))),  # default: 10 evaluation points
        ({"--steps": 13}, [2, 4, 6, 8, 10, 12, 13]),  # ceil(13 / 10) = 2, plus the last step
        ({"--epochs": 2, "--eval-every": 1}, [6, 12]),  # the old epoch cadence
    ],
)
def test_eval_cadence(tiny_data, tmp_path, budget, expected):
    assert run(tiny_data, tmp_path / "r", **budget) == 0
    h = pd.read_csv(tmp_path / "r" / "history.csv")
    assert h["step"].tolist() == expected
    assert h["epoch"].tolist() == pytest.approx([s / STEPS_PER_EPOCH for s in expected], abs=1e-6)
    assert h["val/R1_mean"].notna().all() and h["val/holder"].notna().all()
    # loss: the mean over the steps since the previous evaluation point
    steps = pd.read_csv(tmp_path / "r" / "steps.csv")
    bounds = [0] + expected
    for row, (lo, hi) in zip(h.itertuples(), itertools.pairwise(bounds)):
        assert row.loss == pytest.approx(steps["loss"].iloc[lo:hi].mean(), rel=1e-12)
    info = json.loads((tmp_path / "r" / "train.json").read_text())
    assert info["eval_points"] == len(expected)


def test_validation_instruments_switch(tiny_data, tmp_path):
    cadence = {"--steps": 6, "--eval-every-steps": 3}
    for mode in ("standard", "full", "core"):
        assert run(tiny_data, tmp_path / mode, **cadence, **{"--val-instruments": mode}) == 0
    h = {m: pd.read_csv(tmp_path / m / "history.csv") for m in ("standard", "full", "core")}
    claim = ["val/R1_mean", "val/holder", "val/proxy/bound", "val/proxy/alignment", "val/proxy/uniformity"]
    for mode, df in h.items():
        assert df[claim].notna().all().all(), mode
    grad = "val/grad/cos_align_unif_anchor/mean"
    assert h["full"][grad].notna().all() and h["full"]["val/gap/relative_gap_pairs"].notna().all()
    assert h["standard"][grad].isna().tolist() == [True, False]  # conflicts at the last point only
    assert h["standard"]["val/gap/relative_gap_pairs"].notna().all()
    assert not any(c.startswith(("val/grad", "val/conflict", "val/gap")) for c in h["core"].columns)
    # the instruments do not change training
    for col in ("loss", "val/R1_mean", "val/holder"):
        assert h["core"][col].tolist() == h["full"][col].tolist()


# ----------------------------------------------------------------------------- selection


def test_best_val_selects_the_argmax_step(tiny_data, tmp_path):
    # a large learning rate makes validation R@1 peak before the end
    common = {"--lr": 0.5, "--eval-every-steps": 2}
    assert run(tiny_data, tmp_path / "best", **common, **{"--steps": 24, "--select": "best_val"}) == 0
    h = pd.read_csv(tmp_path / "best" / "history.csv")
    r1 = h["val/R1_mean"].tolist()
    best_step = int(h["step"].iloc[r1.index(max(r1))])  # first maximum
    assert best_step < 24, "the planted curve should peak before the last step"
    info = json.loads((tmp_path / "best" / "train.json").read_text())
    assert info["selected_step"] == info["best_val_step"] == best_step
    assert info["best_val_R1"] == max(r1) and info["selected"]["val/R1_mean"] == max(r1)
    assert info["final"]["step"] == 24
    # the same run stopped at the selected step holds exactly those weights
    assert run(tiny_data, tmp_path / "ref", **common, **{"--steps": best_step}) == 0
    assert same_weights(weights(tmp_path / "best"), weights(tmp_path / "ref"))
    # and the checkpoint still holds the last step's weights, which differ
    last = load_checkpoint(tmp_path / "best" / "checkpoint.pt")
    assert last["step"] == 24
    assert not torch.equal(last["model"]["encoders.0.net.0.weight"],
                           weights(tmp_path / "best")["encoders.0.net.0.weight"])
    # --select may change on resume: the finished run is re-selected without training
    assert run(tiny_data, tmp_path / "best", **common, **{"--steps": 24, "--select": "last"}) == 0
    assert torch.equal(weights(tmp_path / "best")["encoders.0.net.0.weight"], last["model"]["encoders.0.net.0.weight"])
    assert json.loads((tmp_path / "best" / "train.json").read_text())["selected_step"] == 24


@pytest.mark.parametrize(
    "curve, expected",
    [
        ([10, 20, 30, 40, 50, 60, 70, 80], True),   # still rising steeply
        ([10, 40, 60, 70, 70.5, 70.2, 70.8, 70.9], False),  # plateau: +0.9 <= 1 point
        ([10, 40, 60, 70, 70.5, 70.2, 70.8, 71.6], True),   # +1.1 > 1 point
        ([10, 40, 80, 70, 60, 60, 60, 60], False),  # peaked early, then fell
    ],
)
def test_still_improving_on_planted_curves(curve, expected):
    steps = [25 * (i + 1) for i in range(len(curve))]  # 25 .. 200: the last quarter is 175, 200
    assert still_improving(steps, curve, total_steps=200) is expected


def test_still_improving_undefined_and_nan():
    assert still_improving([200], [50.0], total_steps=200) is None  # nothing before the last quarter
    assert still_improving([10, 20], [50.0, 60.0], total_steps=200) is None  # nothing in it
    assert still_improving([100, 200], [50.0, float("nan")], total_steps=200) is None
    assert still_improving([100, 200], [50.0, 52.0], total_steps=200, tolerance=3.0) is False


# ----------------------------------------------------------------------------- optimizer


def _model_and_objective():
    torch.manual_seed(0)
    model = MultiEncoder([5, 4], dim=3, hidden=6, depth=1, head="layernorm")
    loss_fn = objectives.build("infonce", temperature=0.1, learnable_temperature=True)
    return model, loss_fn


def test_parameter_groups_clip_and_all():
    model, loss_fn = _model_and_objective()
    named = dict(model.named_parameters()) | {f"objective.{k}": p for k, p in loss_fn.named_parameters()}
    groups = parameter_groups(model, loss_fn, 0.1, "clip")
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert len(by_id) == len(named)
    decayed = sorted(n for n, p in named.items() if by_id[id(p)] == 0.1)
    assert decayed == ["encoders.0.net.0.weight", "encoders.0.net.2.weight",
                       "encoders.1.net.0.weight", "encoders.1.net.2.weight"]
    for n in ("encoders.0.net.0.bias", "encoders.1.norm.weight", "encoders.1.norm.bias",
              "objective.temperature.log_scale"):
        assert by_id[id(named[n])] == 0.0, n
    (single,) = parameter_groups(model, loss_fn, 0.1, "all")
    assert single["weight_decay"] == 0.1 and [id(p) for p in single["params"]] == [id(p) for p in named.values()]


def test_clip_groups_decay_only_matrices_in_an_adamw_step():
    """With zero gradients AdamW's update is zero, so one step multiplies decayed parameters by
    exactly 1 - lr * weight_decay and leaves the others unchanged."""
    model, loss_fn = _model_and_objective()
    named = dict(model.named_parameters()) | {f"objective.{k}": p for k, p in loss_fn.named_parameters()}
    before = {n: p.detach().clone() for n, p in named.items()}
    opt = torch.optim.AdamW(parameter_groups(model, loss_fn, 0.5, "clip"), lr=0.1)
    for p in named.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in named.items():
        factor = 1 - 0.1 * 0.5 if p.ndim >= 2 else 1.0
        assert torch.equal(p.detach(), before[n] * factor) or torch.allclose(p.detach(), before[n] * factor,
                                                                              rtol=0, atol=1e-7), n
        assert (p.ndim >= 2) == (not torch.equal(p.detach(), before[n])), n


def test_train_uses_the_chosen_groups(tiny_data, tmp_path):
    params = ["temperature=0.1", "learnable_temperature=true"]
    assert run(tiny_data, tmp_path / "clip", **{"--steps": 2, "--weight-decay-groups": "clip", "--param": params}) == 0
    assert run(tiny_data, tmp_path / "all", **{"--steps": 2, "--param": params}) == 0
    clip = load_checkpoint(tmp_path / "clip" / "checkpoint.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in clip] == [1e-4, 0.0]
    assert len(clip[0]["params"]) == 6  # 3 encoders x 2 weight matrices
    (whole,) = load_checkpoint(tmp_path / "all" / "checkpoint.pt")["optimizer"]["param_groups"]
    assert whole["weight_decay"] == 1e-4 and len(whole["params"]) == 6 * 2 + 1
    # groups change training: the two runs differ
    assert not same_weights(weights(tmp_path / "clip"), weights(tmp_path / "all"))


def test_clamp_is_called_after_every_optimizer_step(tiny_data, tmp_path, monkeypatch):
    """A recording clamp_ that sets the parameter to a constant: the saved value is that constant
    only if the last call came after the last optimizer step (an Adam update moves it)."""
    calls = []

    def record(self):
        calls.append(float(self.log_scale))
        with torch.no_grad():
            self.log_scale.fill_(2.5)
        return self

    monkeypatch.setattr(Temperature, "clamp_", record)
    params = ["temperature=0.1", "learnable_temperature=true"]
    assert run(tiny_data, tmp_path / "r", **{"--steps": 5, "--param": params, "--lr": 0.01}) == 0
    assert len(calls) == 5
    assert all(c != 2.5 for c in calls)  # each call saw a parameter just moved by the optimizer
    assert float(weights(tmp_path / "r")["objective.temperature.log_scale"]) == 2.5


def test_clip_clamp_keeps_the_logit_scale_in_range(tiny_data, tmp_path):
    """CLIP's setting end to end: a learnable logit scale clamped after each step to [log(1 /
    max_temperature), log(1 / min_temperature)] = [0, ln 2] here; the unclamped run leaves that range
    (it ends near 0.77), so the check can fail."""
    def final_log_scale(name, clamp):
        params = ["temperature=1.0", "learnable_temperature=true", "min_temperature=0.5",
                  f"temperature_clamp={clamp}"]
        assert run(tiny_data, tmp_path / name, **{"--steps": 6, "--lr": 0.5, "--param": params}) == 0
        return float(weights(tmp_path / name)["objective.temperature.log_scale"])

    assert 0.0 <= final_log_scale("clamped", "after_step") <= math.log(2.0)
    assert final_log_scale("free", "none") > math.log(2.0)


# ----------------------------------------------------------------------------- encoder head


def test_layernorm_head_rows():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    ln = Encoder(5, 16, hidden=8, depth=1, head="layernorm")
    z = ln(x)
    assert torch.allclose(z.mean(dim=1), torch.zeros(64), atol=1e-5)
    assert torch.allclose(z.var(dim=1, unbiased=False), torch.ones(64), atol=1e-3)
    assert torch.allclose(z.norm(dim=1), torch.full((64,), 4.0), atol=2e-3)  # sqrt(d), not 1
    assert {"norm.weight", "norm.bias"} <= set(ln.state_dict())
    lin = Encoder(5, 16, hidden=8, depth=1)
    assert torch.allclose(lin(x).norm(dim=1), torch.ones(64), atol=1e-6)
    assert not any(k.startswith("norm.") for k in lin.state_dict())  # old model.pt files still load
    with pytest.raises(ValueError, match=r"head must be one of \['linear', 'layernorm'\], got 'l2'"):
        MultiEncoder([5], 4, head="l2")


def test_layernorm_head_trains_and_loads(tiny_data, tmp_path, capsys):
    assert run(tiny_data, tmp_path / "r", **{"--steps": 4, "--head": "layernorm"}) == 0
    cfg, model, _, _ = load_run(tmp_path / "r")
    assert cfg["head"] == "layernorm" and model.head == "layernorm"
    assert torch.equal(model.state_dict()["encoders.0.norm.weight"], weights(tmp_path / "r")["encoders.0.norm.weight"])
    h = pd.read_csv(tmp_path / "r" / "history.csv")
    assert h["val/R1_mean"].notna().all() and h["val/holder"].notna().all()
    # an objective that requires unit rows gets one clear error naming the head
    assert run(tiny_data, tmp_path / "bad", **{"--steps": 4, "--head": "layernorm",
                                               "--param": ["normalize=false"]}) == 1
    err = capsys.readouterr().err
    assert "rejected the embeddings at step 1 (--head layernorm)" in err and "unit L2 norm" in err


# ----------------------------------------------------------------------------- UniAlign reduction


@pytest.mark.parametrize("uniformity", ["each", "anchor", "union"])
@pytest.mark.parametrize("M", [2, 3, 5])
def test_unialign_uniformity_reduction_matches_reference(uniformity, M):
    zs = make_zs(M, 7, 4, seed=M)
    for reduction in ("sum", "mean"):
        params = {"uniformity": uniformity, "bandwidth": 0.5, "lam_uni": 0.7,
                  "uniformity_reduction": reduction}
        lib = objectives.build("unialign", **params)(zs)
        ref = REFERENCES["unialign"](zs, **params)
        for k in ref["terms"]:
            assert float(lib.terms[k]) == pytest.approx(float(ref["terms"][k]), rel=1e-10, abs=1e-12), (reduction, k)
    default = objectives.build("unialign", uniformity=uniformity, bandwidth=0.5)(zs)
    summed = objectives.build("unialign", uniformity=uniformity, bandwidth=0.5, uniformity_reduction="sum")(zs)
    assert torch.equal(default.loss, summed.loss)  # the default is the literal sum


def test_unialign_mean_reduction_keeps_the_balance_constant_in_m():
    """Every modality a rotation of one set: per-modality uniformity and per-pair alignment do not
    depend on M, so with "mean" neither does the loss; with "sum" uniformity grows as M."""
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(9, 4, dtype=torch.float64), dim=1)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    terms = {}
    for M in (2, 3, 6):
        zs = [x] + [x @ q] * (M - 1)
        for reduction in ("sum", "mean"):
            out = objectives.build("unialign", bandwidth=0.5, uniformity_reduction=reduction)(zs)
            terms[M, reduction] = (float(out.terms["uniformity"]), float(out.terms["alignment"]))
    for M in (3, 6):
        assert terms[M, "mean"] == pytest.approx(terms[2, "mean"], rel=1e-12)
        assert terms[M, "sum"][0] == pytest.approx(terms[2, "sum"][0] * M / 2, rel=1e-12)
        assert terms[M, "sum"][1] == pytest.approx(terms[2, "sum"][1], rel=1e-12)


def test_unialign_uniformity_reduction_rejects_other_values():
    with pytest.raises(ValueError, match=r"uniformity_reduction must be one of \['sum', 'mean'\], got 'avg'"):
        objectives.build("unialign", uniformity_reduction="avg")
