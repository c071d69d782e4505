"""The fix's batched orthogonal draws (schemes.orthogonal_batch): the blocked product of
reflectors against LAPACK's, and the draws' distribution against Haar measure's closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from initcheck import schemes
from initcheck.schemes import Scheme, draw_batch, orthogonal_batch


def _reflectors(count: int, m: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random unit lower-trapezoidal V (m, k) and taus in [1, 2], as dlarfg makes them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(count, m, k, generator=g, dtype=torch.float64).tril_()
    x.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    tau = 2.0 / (x * x).sum(-2)  # H = I - tau v v^T is a reflection exactly when tau = 2 / |v|^2
    return x, tau


@pytest.mark.parametrize("m,k", [(7, 7), (9, 4), (300, 300), (300, 129), (257, 256)])
def test_blocked_product_is_lapacks_householder_product(m, k):
    # the oracle is torch.linalg.householder_product (LAPACK orgqr); sizes straddle the block
    v, tau = _reflectors(2, m, k, seed=m + k)
    ours = schemes._reflect(v, tau, torch.ones(2, k, dtype=torch.float64))
    assert torch.allclose(ours, torch.linalg.householder_product(v, tau), atol=1e-10)


def test_blocked_product_applies_the_diagonal_to_the_columns():
    v, tau = _reflectors(1, 40, 30, seed=5)
    d = torch.where(torch.arange(30) % 3 == 0, -2.0, 0.5).to(torch.float64)
    want = torch.linalg.householder_product(v, tau) * d  # column j times d_j
    assert torch.allclose(schemes._reflect(v, tau, d.unsqueeze(0)), want, atol=1e-10)


@pytest.mark.parametrize("rows,cols", [(1, 5), (5, 1), (129, 129), (300, 200), (200, 300), (257, 260)])
def test_draws_are_orthogonal_times_the_gain_in_every_shape(rows, cols):
    q = orthogonal_batch(3, rows, cols, 1.7, torch.Generator().manual_seed(0))
    assert q.shape == (3, rows, cols) and q.dtype == torch.float32
    k = min(rows, cols)
    gram = q.mT @ q if rows >= cols else q @ q.mT  # the short side's Gram matrix
    assert torch.allclose(gram, 1.7 ** 2 * torch.eye(k).expand(3, k, k), atol=2e-5)


def test_the_trace_has_haars_moments():
    # Diaconis & Shahshahani (1994): for Haar O(n), n >= 4, tr Q has the first four moments of
    # N(0, 1): mean 0, E tr^2 = 1, E tr^4 = 3.
    n, count = 6, 20000
    tr = orthogonal_batch(count, n, n, 1.0, torch.Generator().manual_seed(11)).double().diagonal(dim1=-2, dim2=-1).sum(-1)
    se = 1 / math.sqrt(count)
    assert abs(float(tr.mean())) < 4 * se
    assert abs(float(tr.pow(2).mean()) - 1.0) < 4 * math.sqrt(2) * se
    assert abs(float(tr.pow(4).mean()) - 3.0) < 4 * math.sqrt(96) * se  # Var(z^4) = 105 - 9


def test_a_row_is_uniform_on_the_sphere():
    # Archimedes: a uniform point of the sphere S^2 has each coordinate uniform on [-1, 1]; a Haar
    # Q's first row is such a point. Kolmogorov-Smirnov against U(-1, 1), alpha = 0.001.
    count = 4000
    q = orthogonal_batch(count, 3, 3, 1.0, torch.Generator().manual_seed(12)).double()
    for coord in (q[:, 0, 0], q[:, 0, 2], q[:, 2, 1]):
        x, _ = coord.sort()
        cdf = (x + 1) / 2
        i = torch.arange(1, count + 1, dtype=torch.float64)
        ks = float(torch.maximum(i / count - cdf, cdf - (i - 1) / count).max())
        assert ks < 1.95 / math.sqrt(count)


def test_half_the_draws_are_reflections():
    # Haar O(n): P(det = +1) = P(det = -1) = 1/2
    n, count = 5, 4000
    det = torch.linalg.det(orthogonal_batch(count, n, n, 1.0, torch.Generator().manual_seed(13)).double())
    assert torch.allclose(det.abs(), torch.ones(count, dtype=torch.float64), atol=1e-5)
    plus = float((det > 0).double().mean())
    assert abs(plus - 0.5) < 4 * 0.5 / math.sqrt(count)


def test_entries_have_the_spheres_mean_absolute_value_in_wide_and_tall_draws():
    # each row of a wide draw (each column of a tall one) is uniform on S^(n-1):
    # E|x_1| = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2))
    for rows, cols in ((4, 9), (9, 4)):
        q = orthogonal_batch(6000, rows, cols, 1.0, torch.Generator().manual_seed(rows)).double()
        n = max(rows, cols)
        want = math.exp(math.lgamma(n / 2) - math.lgamma((n + 1) / 2)) / math.sqrt(math.pi)
        got = q.abs().mean((0,))
        assert torch.allclose(got, torch.full_like(got, want), atol=0.02)


def test_the_same_seed_gives_the_same_draws_and_another_seed_others():
    a = orthogonal_batch(2, 140, 130, 1.0, torch.Generator().manual_seed(3))
    b = orthogonal_batch(2, 140, 130, 1.0, torch.Generator().manual_seed(3))
    c = orthogonal_batch(2, 140, 130, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_delta_orthogonal_conv_with_more_outputs_than_inputs():
    convs = [torch.nn.Conv2d(5, 12, 3).weight.data for _ in range(2)]
    draw_batch(Scheme.DELTA_ORTHOGONAL, convs, 1.0, torch.Generator().manual_seed(0))
    for w in convs:
        centre = w[:, :, 1, 1]
        assert torch.allclose(centre.T @ centre, torch.eye(5), atol=1e-5)  # 12 x 5: orthonormal columns
        w[:, :, 1, 1] = 0
        assert torch.count_nonzero(w) == 0


def test_draws_leave_the_global_rng_alone_when_given_a_generator():
    state = torch.get_rng_state()
    orthogonal_batch(2, 8, 8, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
