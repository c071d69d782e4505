"""After any fix, diagnose finds nothing at or above the severity the fix acted on (a model with no
finding: nothing at warning or above), on every model of the hand-written vision zoo and the
Hugging Face configs, static and data-driven. Slow: each model is analysed three times."""

import sys
import warnings
from pathlib import Path

import pytest
import torch
import vision_zoo

from initcheck import diagnose, fix
from initcheck.findings import Severity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

pytestmark = pytest.mark.slow


def _check(model, data_driven: bool) -> list[str]:
    before = diagnose(model).findings
    acted = max((f.severity for f in before), default=Severity.WARNING)
    fix(model, data_driven=data_driven, generator=torch.Generator().manual_seed(0))
    return [f"{f.code} {f.message}" for f in diagnose(model).findings if f.severity >= acted]


@pytest.mark.parametrize("data_driven", [False, True], ids=["static", "data-driven"])
@pytest.mark.parametrize("name", list(vision_zoo.ZOO))
def test_fix_of_a_vision_zoo_model_leaves_nothing_it_acted_on(name, data_driven):
    assert not _check(vision_zoo.build(name), data_driven)


def _hf() -> dict:
    pytest.importorskip("transformers")
    from prediction import hf_models

    return hf_models()


@pytest.mark.parametrize("data_driven", [False, True], ids=["static", "data-driven"])
@pytest.mark.parametrize("name", ["hf_gpt2", "hf_bert", "hf_llama", "hf_t5"])
def test_fix_of_a_hugging_face_model_leaves_nothing_it_acted_on(name, data_driven):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = _hf()[name]()
        assert not _check(model, data_driven)
