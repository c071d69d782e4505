"""The training-framework callbacks with the real libraries (a few CPU steps), and the promise that
none of the optional extras is imported unless used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from initcheck.guard import InitError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTRAS = ("matplotlib", "lightning", "pytorch_lightning", "transformers")


def imported_after(code: str) -> list[str]:
    """Which optional extras a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {EXTRAS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.rstrip("\n").split("\n")[-1].split(",") if m]


def test_import_help_and_diagnose_load_no_extra():
    code = ("import torch, initcheck, initcheck.guard, initcheck.notebook, initcheck.integrations\n"
            "from click.testing import CliRunner\nfrom initcheck.cli import main\n"
            "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "r = initcheck.diagnose(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))\n"
            "repr(r); r._repr_html_(); str(r)")
    assert imported_after(code) == []
    assert imported_after("import matplotlib") == ["matplotlib"]  # the check itself can see an import


@pytest.mark.parametrize("module, hidden, extra", [
    ("initcheck.integrations.lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"), "lightning"),
    ("initcheck.integrations.transformers", ("transformers",), "hf"),
])
def test_missing_framework_says_which_extra(monkeypatch, module, hidden, extra):
    import importlib

    from initcheck.integrations import MissingExtra

    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # import name -> ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingExtra, match=rf"pip install initcheck\[{extra}\]$"):
        importlib.import_module(module)


def net(std: float | None) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    if std is not None:
        with torch.no_grad():
            for m in model:
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, std)
    return model


# --- Lightning ---------------------------------------------------------------------------------


def lightning_run(std: float | None, logger: object = False, **callback):
    L = pytest.importorskip("lightning.pytorch")
    from initcheck.integrations.lightning import InitCheck

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.steps = 0
            self.example_input_array = torch.randn(4, 16)

        def configure_model(self) -> None:
            # built here, as FSDP users do: the callback must see these weights, not an empty module
            if not hasattr(self, "net"):
                self.net = net(std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, _):
            self.steps += 1
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 16, generator=g), torch.randint(0, 2, (16,), generator=g))
    check = InitCheck(**callback)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[check])
    module = Module()
    return trainer, module, check, lambda: trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))


@pytest.mark.slow
def test_lightning_passes_a_good_model_and_trains(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    trainer, module, check, fit = lightning_run((1 / 16) ** 0.5, logger=CSVLogger(tmp_path, name="run"))
    fit()
    assert check.report is not None and check.report.ok
    assert module.steps == 2
    (metrics,) = tmp_path.glob("run/*/metrics.csv")
    assert "initcheck/errors" in metrics.read_text().splitlines()[0]


@pytest.mark.slow
def test_lightning_stops_a_bad_model_before_the_first_step():
    trainer, module, check, fit = lightning_run(1.0)
    with pytest.raises(InitError) as err:
        fit()
    assert module.steps == 0
    assert err.value.report is check.report and not check.report.ok
    assert [lr.qualname for lr in check.report.layers][0] == "net.0.weight"  # configure_model had run


@pytest.mark.slow
def test_lightning_fixes_when_asked():
    trainer, module, check, fit = lightning_run(1.0, fix=True)
    fit()
    assert module.steps == 2 and check.report.ok
    assert float(module.net[0].weight.detach().std()) < 0.5  # N(0, 1) replaced by a tanh scheme (~0.37 or less)


# --- Hugging Face transformers -----------------------------------------------------------------


def hf_run(tmp_path, damage: float | None = None, pretrained: str = "", **callback):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from initcheck.integrations.transformers import InitCheckCallback

    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)  # post_init ran _init_weights: HF's N(0, 0.02)
    if damage is not None:
        with torch.no_grad():
            for block in model.transformer.h:
                block.mlp.c_fc.weight.normal_(0.0, damage)
                block.mlp.c_proj.weight.normal_(0.0, damage)
    if pretrained:
        model.config._name_or_path = pretrained
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4,
                                          report_to=[], save_strategy="no", use_cpu=True, logging_strategy="no",
                                          disable_tqdm=True)
    check = InitCheckCallback(**callback)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[check])
    return trainer, model, check


@pytest.mark.slow
def test_hf_trainer_judges_weights_after_post_init(tmp_path, caplog):
    trainer, model, check = hf_run(tmp_path)
    with caplog.at_level("INFO", logger="initcheck"):
        trainer.train()
    assert "initcheck: GPT2LMHeadModel: 0 errors" in caplog.text
    assert check.report is not None and check.report.ok
    assert trainer.state.global_step == 2
    assert any("initcheck/errors" in entry for entry in trainer.state.log_history)


@pytest.mark.slow
def test_hf_trainer_stops_a_damaged_model(tmp_path):
    # GPT-2's MLP weights at N(0, 3) instead of 0.02: IC103 warnings on every MLP weight
    trainer, model, check = hf_run(tmp_path, damage=3.0, fail_on="warning")
    with pytest.raises(InitError):
        trainer.train()
    assert trainer.state.global_step == 0
    assert {f.layer for f in check.report.findings if f.severity >= "warning"} == {
        f"transformer.h.{i}.mlp.{name}.weight" for i in range(2) for name in ("c_fc", "c_proj")}


@pytest.mark.slow
def test_hf_trainer_skips_pretrained_weights(tmp_path):
    trainer, model, check = hf_run(tmp_path, damage=3.0, pretrained="gpt2")
    trainer.train()
    assert check.report is None and trainer.state.global_step == 2
