"""Run by tests/test_integrations_fsdp.py: Lightning's ModelParallelStrategy on 2 CPU processes (gloo),
the model sharded with FSDP2's fully_shard in configure_model, judged by the InitCheck callback.

Usage: python lightning_fsdp_worker.py STD OUT_DIR [fix]. Lightning starts rank 1 itself by running this
script again. Each rank writes OUT_DIR/rank<R>.json: what it saw (the callback's report, an unsharded
twin's report, whether its parameters were DTensors, the steps it trained, the error it raised)."""

from __future__ import annotations

import json
import os
import sys
import traceback

import lightning.pytorch as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

import initcheck
from initcheck.guard import InitError
from initcheck.integrations.lightning import InitCheck

WIDTHS = (16, 64, 64, 2)


def build(std: float) -> nn.Sequential:
    """tanh MLP whose hidden weights are N(0, std): 64 rows, so each of 2 ranks holds 32."""
    torch.manual_seed(0)  # every rank builds the same full model, as FSDP expects before sharding
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.normal_(0.0, std if i < len(WIDTHS) - 2 else (1 / a) ** 0.5)
        layers += [lin, nn.Tanh()] if i < len(WIDTHS) - 2 else [lin]
    return nn.Sequential(*layers)


class Module(L.LightningModule):
    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std
        self.steps = 0
        self.sharded = False

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        if hasattr(self, "net"):
            return
        self.net = build(self.std)
        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)
        self.sharded = all(type(p).__name__ == "DTensor" for p in self.net.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        self.steps += 1
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    std, out, fix = float(sys.argv[1]), sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "fix"
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 16, generator=g), torch.randint(0, 2, (16,), generator=g))
    check = InitCheck(fix=fix, example_inputs=torch.randn(4, 16, generator=g))
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=2, strategy=strategy, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[check])
    module = Module(std)
    error = None
    try:
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    except InitError as e:
        error = f"InitError: {str(e).splitlines()[0]}"
    except Exception:
        error = traceback.format_exc()
    rank = trainer.global_rank
    seen = {"rank": rank, "sharded": module.sharded, "steps": module.steps, "error": error,
            "report": check.report.to_dict() if check.report is not None else None,
            "twin": initcheck.diagnose(build(std)).to_dict()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main()
