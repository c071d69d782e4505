"""Run by tests/test_distributed.py: a 2-process FSDP2 model against its unsharded twin."""

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def run(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    import models as M
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import initcheck

    torch.manual_seed(0)
    model = M.mlp((96, 80, 48, 10), init=lambda w: torch.nn.init.uniform_(w, -1, 1))
    twin = initcheck.diagnose(model).to_dict()
    mesh = init_device_mesh("cpu", (world,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert type(model[0].weight).__name__ == "DTensor" and model[0].weight.to_local().shape[0] == 40  # one shard of 80 rows
    report = initcheck.diagnose(model).to_dict()
    for a, b in zip(twin["layers"], report["layers"], strict=True):
        assert abs(a["actual_std"] / b["actual_std"] - 1) < 1e-6, (a, b)  # shards chunk differently
        assert abs(a["actual_mean"] - b["actual_mean"]) < 1e-7, (a, b)
        assert a["fan_in"] == b["fan_in"] and a["activation"] == b["activation"]
    assert [f["code"] for f in twin["findings"]] == [f["code"] for f in report["findings"]]
    print(f"rank {rank}: same report", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    import torch.multiprocessing as mp

    mp.spawn(run, args=(2, int(sys.argv[1])), nprocs=2)
