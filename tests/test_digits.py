"""A real training run (scikit-learn's bundled digits): fix() makes bad inits train like He's."""

import os
import sys

import pytest
import torch

pytest.importorskip("sklearn")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import digits_experiment as D
import seeds as S

import initcheck

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    return D.load_digits()


def accuracy(cls, data, fixed: bool, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = cls(in_features=64)
    if fixed:
        initcheck.fix(model, data[0][:256], generator=torch.Generator().manual_seed(seed))
    return D.train(model, data, seed, epochs=2)


def test_bad_inits_do_not_learn_and_fixed_ones_train_like_he(data):
    he = accuracy(S.He, data, fixed=True)
    assert he > 85
    for cls in (S.Zeros, S.Ones, S.Uniform01):
        assert accuracy(cls, data, fixed=False) < 20
        assert accuracy(cls, data, fixed=True) > he - 3


def test_a_deep_tanh_mlp_trains_after_the_fix_and_not_before(data):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import deep_digits as B

    results = {}
    for name in ("PyTorch default", "initcheck data-driven fix"):
        torch.manual_seed(0)
        model = B.tanh_mlp(30)
        B.INITS[name](model, data[0][:256], 0)
        results[name] = B.train(model, data, 0, steps=200)[2]
    assert results["PyTorch default"] < 0.35, results  # ten classes: chance is 0.1
    assert results["initcheck data-driven fix"] > 0.6, results


@pytest.mark.parametrize("fixed", ["static", "data-driven"])
def test_every_tutorial_seed_trains_within_3_points_of_he_after_the_fix(data, fixed):
    def after(cls):
        torch.manual_seed(0)
        model = cls(in_features=64)
        inputs = data[0][:256] if fixed == "data-driven" else None
        initcheck.fix(model, inputs, generator=torch.Generator().manual_seed(0))
        return D.train(model, data, 0, epochs=2)

    he = after(S.He)
    assert he > 85
    tutorial = (S.Zeros, S.Ones, S.Uniform01, D.Normal1, D.Normal001, S.InvSqrtN, S.TruncNormal01, S.XavierReLU)
    scores = {cls.__name__: after(cls) for cls in tutorial}
    assert all(v > he - 3 for v in scores.values()), (he, scores)
