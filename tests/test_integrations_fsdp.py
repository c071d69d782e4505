"""The Lightning callback on a really sharded model: Lightning's ModelParallelStrategy, 2 CPU processes
(gloo), the weights sharded by FSDP2's fully_shard in configure_model (tests/lightning_fsdp_worker.py).
The oracle is the same model unsharded: its report must be what every rank judged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from initcheck.guard import InitError

HERE = os.path.dirname(os.path.abspath(__file__))


def sharded_fit(tmp_path, std: float, *extra: str) -> tuple[list[dict], str]:
    pytest.importorskip("lightning.pytorch")
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    pytest.importorskip("torch.distributed.fsdp").fully_shard  # noqa: B018  (FSDP2: torch >= 2.6)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_"))}
    out = subprocess.run([sys.executable, os.path.join(HERE, "lightning_fsdp_worker.py"), str(std), str(tmp_path), *extra],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks, out.stdout + out.stderr


def same_weights(report: dict, twin: dict) -> None:
    """The callback judged the whole weights: the unsharded twin's shapes, statistics and findings."""
    for a, b in zip(report["layers"], twin["layers"], strict=True):
        assert a["shape"] == b["shape"] and a["fan_in"] == b["fan_in"]
        assert a["actual_std"] == pytest.approx(b["actual_std"], rel=1e-6)
        assert a["actual_mean"] == pytest.approx(b["actual_mean"], abs=1e-7)
    assert [f["code"] for f in report["findings"]] == [f["code"] for f in twin["findings"]]


@pytest.mark.slow
def test_sharded_bad_init_stops_every_rank_before_the_first_step(tmp_path):
    # hidden tanh weights N(0, 1) with fan_in 16 and 64: pre-activations of rms 4 and 8 saturate tanh
    # (IC203, an error); fix=True must not pretend to repair shards
    ranks, logs = sharded_fit(tmp_path, 1.0, "fix")
    for seen in ranks:
        assert seen["sharded"], "configure_model must have sharded every parameter"
        assert seen["steps"] == 0
        assert seen["error"] is not None and seen["error"].startswith("InitError: Module:"), seen["error"]
        same_weights(seen["report"], seen["twin"])
        assert seen["report"]["layers"][1]["shape"] == [64, 64]  # the whole weight, not a rank's 32 rows
    assert ranks[0]["report"]["findings"] == ranks[1]["report"]["findings"]
    assert logs.count("initcheck: Module: 1 error") == 1  # rank 0 alone logs
    assert "does not repair sharded (DTensor) parameters" in logs


@pytest.mark.slow
def test_sharded_good_init_trains_on_every_rank(tmp_path):
    ranks, logs = sharded_fit(tmp_path, 0.15)
    for seen in ranks:
        assert seen["sharded"] and seen["error"] is None and seen["steps"] == 2
        assert not [f for f in seen["report"]["findings"] if f["severity"] == "error"]
        same_weights(seen["report"], seen["twin"])
    assert logs.count("initcheck: Module: 0 errors") == 1


@pytest.mark.slow  # importing Lightning alone takes seconds here
def test_fsdp1_wrapping_is_skipped_not_misjudged(caplog):
    # Lightning runs FSDPStrategy (FSDP1) on GPUs only, and FSDP1 needs an accelerator: a wrapper is
    # stood in by an uninitialized FullyShardedDataParallel, which is all the detection looks at
    pytest.importorskip("lightning.pytorch")
    from types import SimpleNamespace

    from torch.distributed.fsdp import FullyShardedDataParallel

    from initcheck.integrations.lightning import InitCheck

    def bad() -> nn.Sequential:
        model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 2))
        with torch.no_grad():
            model[0].weight.normal_(0.0, 1.0)  # pre-activation rms 4: saturated tanh, an error
        return model

    trainer = SimpleNamespace(strategy=None, is_global_zero=True, loggers=[])
    with pytest.raises(InitError):
        InitCheck().on_fit_start(trainer, bad())  # unwrapped: judged, and it fails
    wrapped = bad()
    stand_in = FullyShardedDataParallel.__new__(FullyShardedDataParallel)
    nn.Module.__init__(stand_in)
    wrapped.add_module("fsdp", stand_in)
    check = InitCheck()
    with caplog.at_level("INFO"):
        check.on_fit_start(trainer, wrapped)
    assert check.report is None and "FSDPStrategy (FSDP1) holds flattened shards" in caplog.text
