"""The init schemes in one place: how each draws a tensor, the std it promises, and the exact
`torch.nn.init` call that a finding's fix shows. Diagnosis text (remedy.py), fix.py and plan.py use it.

Every draw goes through torch.nn.init's own functions, or torch's own tensor draws with the same
bounds (when our fans, counted from use, differ from torch's shape rule), so that a generator seeded
alike gives torch's numbers. Closed forms (torch.nn.init's docstrings; the papers):

- He / Kaiming (He et al. 2015): std = gain / sqrt(fan), fan = fan_in (forward) or fan_out (backward);
  uniform bound sqrt(3)·std.
- Xavier / Glorot (Glorot & Bengio 2010): std = gain·sqrt(2 / (fan_in + fan_out)); uniform bound sqrt(3)·std.
- LeCun (LeCun et al. 1998; SELU's fixed point): std = 1 / sqrt(fan_in).
- Orthogonal (Saxe et al. 2014): the weight flattened to rows × cols is a (semi-)orthogonal matrix
  times the gain, so its elements have variance gain² / max(rows, cols); packed blocks (RNN gates)
  are drawn one by one.
- Delta-orthogonal (Xiao et al. 2018): a convolution whose kernel is zero except its centre tap,
  an orthogonal out × in matrix times the gain: the conv is an isometry at any depth.
- Embedding N(0, 1) (nn.Embedding's default) and N(0, 0.02) (GPT-2/BERT's initializer_range).
- Zeros.
- Normal(std): an explicit std, for fans that torch's helpers cannot express (grouped, packed).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn


class Scheme(str, Enum):
    HE_NORMAL = "he_normal"
    HE_UNIFORM = "he_uniform"
    XAVIER_NORMAL = "xavier_normal"
    XAVIER_UNIFORM = "xavier_uniform"
    LECUN_NORMAL = "lecun_normal"
    ORTHOGONAL = "orthogonal"
    DELTA_ORTHOGONAL = "delta_orthogonal"
    EMBEDDING = "embedding"  # N(0, 1)
    EMBEDDING_SMALL = "embedding_small"  # N(0, 0.02)
    ZEROS = "zeros"
    NORMAL = "normal"  # N(0, std) with an explicit std

    @classmethod
    def parse(cls, text: str | Scheme) -> Scheme:
        """A scheme from its name ("orthogonal", "he_normal"); a ValueError lists the valid ones."""
        if isinstance(text, Scheme):
            return text
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown init scheme {text!r}; expected one of {', '.join(s.value for s in cls)}") from None


class Mode(str, Enum):
    FAN_IN = "fan_in"
    FAN_OUT = "fan_out"


TITLE = {
    Scheme.HE_NORMAL: "He", Scheme.HE_UNIFORM: "He uniform", Scheme.XAVIER_NORMAL: "Xavier",
    Scheme.XAVIER_UNIFORM: "Xavier uniform", Scheme.LECUN_NORMAL: "LeCun", Scheme.ORTHOGONAL: "orthogonal",
    Scheme.DELTA_ORTHOGONAL: "delta-orthogonal", Scheme.EMBEDDING: "embedding N(0,1)",
    Scheme.EMBEDDING_SMALL: "embedding N(0,0.02)", Scheme.ZEROS: "zeros", Scheme.NORMAL: "normal",
}

# torch.nn.init.calculate_gain's names, and the activation names initcheck uses for them
TORCH_NONLINEARITY = {"relu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh", "sigmoid": "sigmoid",
                      "identity": "linear", "linear": "linear", "selu": "selu"}
EMBEDDING_SMALL_STD = 0.02


@dataclass(frozen=True)
class Init:
    """What a scheme needs besides the tensor: the fans counted from use (not torch's shape rule),
    the gain, He's mode, the packed blocks, and, for the call text, the activation it serves."""

    fan_in: int
    fan_out: int
    gain: float = 1.0
    mode: Mode = Mode.FAN_IN
    blocks: int = 1  # packed blocks (q/k/v, RNN gates) drawn one by one
    std: float | None = None  # Scheme.NORMAL only
    nonlinearity: str | None = None  # initcheck's activation name, for kaiming_'s/xavier_'s call text
    slope: float | None = None  # leaky_relu's negative slope


def expected_std(scheme: Scheme, shape: tuple[int, ...], init: Init) -> float:
    """The std of a weight drawn by `scheme` (the population value; a draw matches it to within
    sampling error, ~1/sqrt(2·numel) relative)."""
    if scheme in (Scheme.HE_NORMAL, Scheme.HE_UNIFORM):
        fan = init.fan_in if init.mode == Mode.FAN_IN else init.fan_out
        return init.gain / math.sqrt(max(fan, 1))
    if scheme in (Scheme.XAVIER_NORMAL, Scheme.XAVIER_UNIFORM):
        return init.gain * math.sqrt(2.0 / max(init.fan_in + init.fan_out, 1))
    if scheme == Scheme.LECUN_NORMAL:
        return 1.0 / math.sqrt(max(init.fan_in, 1))
    if scheme == Scheme.ORTHOGONAL:
        rows = shape[0] // max(init.blocks, 1)
        cols = math.prod(shape[1:])
        return init.gain / math.sqrt(max(rows, cols, 1))
    if scheme == Scheme.DELTA_ORTHOGONAL:
        return init.gain / math.sqrt(max(shape[0], shape[1], 1) * math.prod(shape[2:]))
    if scheme == Scheme.EMBEDDING:
        return 1.0
    if scheme == Scheme.EMBEDDING_SMALL:
        return EMBEDDING_SMALL_STD
    if scheme == Scheme.ZEROS:
        return 0.0
    if init.std is None:
        raise ValueError("Scheme.NORMAL needs Init.std")
    return init.std


def draw(scheme: Scheme, tensor: torch.Tensor, init: Init, generator: torch.Generator | None = None) -> None:
    """Draw `tensor` in place from `scheme`, from `generator` (torch's global RNG when None)."""
    with torch.no_grad():
        if scheme == Scheme.ZEROS:
            tensor.zero_()
        elif scheme in (Scheme.ORTHOGONAL, Scheme.DELTA_ORTHOGONAL):
            for block in tensor.chunk(max(init.blocks, 1)):
                (_delta_orthogonal_ if scheme == Scheme.DELTA_ORTHOGONAL else _orthogonal_)(block, init.gain, generator)
        else:
            std = expected_std(scheme, tuple(tensor.shape), init)
            uniform = scheme in (Scheme.HE_UNIFORM, Scheme.XAVIER_UNIFORM)
            # per block, as the call text does, so that fix and the shown call draw the same numbers
            for block in tensor.chunk(max(init.blocks, 1)):
                if uniform:
                    block.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator=generator)
                else:
                    block.normal_(0.0, std, generator=generator)


def orthogonal_batch(count: int, rows: int, cols: int, gain: float = 1.0, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """`count` independent (rows, cols) matrices from torch.nn.init.orthogonal_'s distribution
    (Haar: the Q of a Gaussian matrix's QR with R's diagonal positive, times `gain`), in one batch.

    Householder QR of an iid Gaussian matrix reflects column k by a vector built from a Gaussian
    vector of length m-k that is independent of the earlier reflections (the Gaussian is rotation
    invariant, so what a reflection leaves of the later columns is iid Gaussian again; Stewart
    1980). So the reflectors are drawn directly and only their product is formed: the
    factorization itself, about half of orthogonal_'s cost, is never run. Each reflector is
    LAPACK's (dlarfg: beta = -sign(alpha)·|x|, v = x/(alpha - beta) with v_0 = 1, tau =
    (beta - alpha)/beta), so R_kk = beta_k and multiplying column k by sign(beta_k) is orthogonal_'s
    sign convention. The product is formed in blocks of BLOCK reflectors (`_reflect`), matrix
    products only. Numbers come from `generator` in one draw: deterministic for a seed, though not
    the numbers orthogonal_ would draw."""
    m, k = max(rows, cols), min(rows, cols)  # orthogonal_ factors the tall orientation
    # row j holds reflector j's Gaussian vector in columns j..m-1 (the rest is never read)
    xt = torch.empty(count, k, m, dtype=torch.float32, device=device).normal_(0.0, 1.0, generator=generator).triu_()
    alpha = xt.diagonal(dim1=-2, dim2=-1).clone()  # (count, k)
    beta = -torch.where(alpha >= 0, 1.0, -1.0) * torch.linalg.vector_norm(xt, dim=-1)
    tau = (beta - alpha) / beta
    xt.div_((alpha - beta).unsqueeze(-1)).diagonal(dim1=-2, dim2=-1).fill_(1.0)
    q = _reflect(xt.mT, tau, torch.where(beta >= 0, gain, -gain))
    return (q.mT if rows < cols else q).to(dtype)


BLOCK = 64  # reflectors applied at once (64 measured fastest at widths 256-1024 on one CPU thread)


def _reflect(v: torch.Tensor, tau: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """H_1 ... H_k applied to [diag(d); 0], H_i = I - tau_i v_i v_i^T, for a batch of (m, k) unit
    lower-trapezoidal V: what LAPACK's orgqr forms (then times diag(d)), backwards in blocks. A
    block's reflectors are one I - V_b T V_b^T with T^{-1} = diag(1/tau) + the strict upper part
    of V_b^T V_b (Joffrain et al. 2006), so each block costs two matrix products and a triangular
    solve; the columns left of the block are still zero below it and need nothing."""
    count, m, k = v.shape
    q = torch.zeros(count, m, k, dtype=v.dtype, device=v.device)
    q.diagonal(dim1=-2, dim2=-1).copy_(diag)
    for j in reversed(range(0, k, BLOCK)):
        e = min(j + BLOCK, k)
        vb = v[:, j:, j:e]
        t_inv = torch.triu(vb.mT @ vb, 1)
        t_inv.diagonal(dim1=-2, dim2=-1).copy_(1.0 / tau[:, j:e])
        qs = q[:, j:, j:]
        qs.baddbmm_(vb, torch.linalg.solve_triangular(t_inv, vb.mT @ qs, upper=True), alpha=-1.0)
    return q


BATCHED = (Scheme.ORTHOGONAL, Scheme.DELTA_ORTHOGONAL)  # the schemes `draw_batch` draws


def draw_batch(scheme: Scheme, tensors: list[torch.Tensor], gain: float = 1.0,
               generator: torch.Generator | None = None) -> None:
    """Draw same-shaped tensors in place from an orthogonal scheme (one unpacked block each) in one
    batch (`orthogonal_batch`): the distribution `draw` gives, not its numbers."""
    if not tensors:
        return
    t0 = tensors[0]
    delta = scheme == Scheme.DELTA_ORTHOGONAL and t0.dim() >= 3
    rows, cols = (t0.shape[0], t0.shape[1]) if delta else (t0.shape[0], t0[0].numel())
    qs = orthogonal_batch(len(tensors), rows, cols, gain, generator, device=t0.device)
    with torch.no_grad():
        for t, q in zip(tensors, qs):
            if delta:
                t.zero_()
                centre = t
                for k in t.shape[2:]:
                    centre = centre.select(2, k // 2)
                centre.copy_(q)
            else:
                t.copy_(q.reshape(t.shape))


def _orthogonal_(t: torch.Tensor, gain: float, generator: torch.Generator | None) -> None:
    # torch's QR needs float32/64: draw in float32 (torch's own numbers for a float32 weight), copy
    if t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
        nn.init.orthogonal_(t, gain=gain, generator=generator)
        return
    tmp = torch.empty(t.shape, dtype=torch.float32, device=t.device)
    nn.init.orthogonal_(tmp, gain=gain, generator=generator)
    t.copy_(tmp)


def _delta_orthogonal_(t: torch.Tensor, gain: float, generator: torch.Generator | None) -> None:
    if t.dim() < 3:
        _orthogonal_(t, gain, generator)
        return
    tap = torch.empty(t.shape[0], t.shape[1], dtype=torch.float32, device=t.device)
    nn.init.orthogonal_(tap, gain=gain, generator=generator)
    t.zero_()
    centre = t
    for k in t.shape[2:]:  # down to the kernel's centre, one spatial dimension at a time
        centre = centre.select(2, k // 2)
    centre.copy_(tap.to(t.dtype))


def accessor(qualname: str, root: str = "model") -> str:
    """"encoder.0.weight" -> 'model.encoder[0].weight'."""
    out = root
    for part in qualname.split("."):
        out += f"[{part}]" if part.isdecimal() else f".{part}"  # what re.fullmatch(r"\d+") matches
    return out


def call_text(scheme: Scheme, target: str, shape: tuple[int, ...], init: Init) -> str:
    """One line of Python (with `nn` = torch.nn in scope) that draws `target` by `scheme`; exec'd, it
    gives the weight `expected_std`. torch's kaiming_/xavier_ helpers are named where torch's
    shape rule computes our fans and its gain is ours; otherwise an explicit normal_ with a comment."""
    return _call_template(scheme, shape, init).replace(_TARGET, target)


_TARGET = "\x00"  # where the target goes in a cached call text: a character no accessor holds


@functools.lru_cache(maxsize=1024)
def _call_template(scheme: Scheme, shape: tuple[int, ...], init: Init) -> str:
    """call_text with _TARGET for the target: once per (scheme, shape, init), which the layers of
    a deep stack share (a finding per layer asks for each)."""
    w = _TARGET
    if scheme == Scheme.ZEROS:
        return f"nn.init.zeros_({w})"
    if scheme == Scheme.EMBEDDING:
        return f"nn.init.normal_({w}, std=1.0)"
    if scheme == Scheme.EMBEDDING_SMALL:
        return f"nn.init.normal_({w}, std={EMBEDDING_SMALL_STD})"
    gain = "" if abs(init.gain - 1.0) < 1e-9 else f", gain={init.gain:.6g}"
    if scheme in (Scheme.ORTHOGONAL, Scheme.DELTA_ORTHOGONAL):
        fn = "initcheck.schemes.delta_orthogonal_" if scheme == Scheme.DELTA_ORTHOGONAL and len(shape) > 2 else "nn.init.orthogonal_"
        if init.blocks > 1:
            return f"for block in {w}.data.chunk({init.blocks}): {fn}(block{gain})"
        return f"{fn}({w}{gain})"
    std = expected_std(scheme, shape, init)
    if init.blocks > 1:
        return f"for block in {w}.data.chunk({init.blocks}): nn.init.normal_(block, std={std:.4g})"
    helper = _torch_helper(scheme, w, shape, init)
    if helper is not None:
        return helper
    fans = f"fan_in {init.fan_in}" if scheme != Scheme.XAVIER_NORMAL and scheme != Scheme.XAVIER_UNIFORM else f"fans {init.fan_in}/{init.fan_out}"
    return f"nn.init.normal_({w}, std={std:.4g})  # {TITLE[scheme]}, gain {init.gain:.3g}, {fans}"


def delta_orthogonal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Delta-orthogonal init of a convolution weight in place (Xiao et al. 2018), as shown in fixes."""
    with torch.no_grad():
        _delta_orthogonal_(tensor, gain, generator)
    return tensor


def torch_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """torch.nn.init's shape rule (fan_in, fan_out)."""
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    rf = math.prod(shape[2:])
    return shape[1] * rf, shape[0] * rf


def _torch_helper(scheme: Scheme, w: str, shape: tuple[int, ...], init: Init) -> str | None:
    if torch_fans(shape) != (init.fan_in, init.fan_out):
        return None
    act = TORCH_NONLINEARITY.get(init.nonlinearity or "")
    if scheme in (Scheme.HE_NORMAL, Scheme.HE_UNIFORM) and act in ("relu", "leaky_relu"):
        slope = init.slope if act == "leaky_relu" else None
        if not math.isclose(nn.init.calculate_gain(act, slope), init.gain, rel_tol=1e-9):  # type: ignore[arg-type]
            return None
        fn = "kaiming_normal_" if scheme == Scheme.HE_NORMAL else "kaiming_uniform_"
        a = f", a={slope:g}" if slope is not None else ""
        mode = ', mode="fan_out"' if init.mode == Mode.FAN_OUT else ""
        return f'nn.init.{fn}({w}{a}{mode}, nonlinearity="{act}")'
    if scheme == Scheme.LECUN_NORMAL:
        return f'nn.init.kaiming_normal_({w}, nonlinearity="linear")'
    if scheme in (Scheme.XAVIER_NORMAL, Scheme.XAVIER_UNIFORM):
        fn = "xavier_normal_" if scheme == Scheme.XAVIER_NORMAL else "xavier_uniform_"
        if act in ("tanh", "sigmoid") and math.isclose(nn.init.calculate_gain(act), init.gain, rel_tol=1e-9):  # type: ignore[arg-type]
            return f'nn.init.{fn}({w}, gain=nn.init.calculate_gain("{act}"))'
        if abs(init.gain - 1.0) < 1e-9:
            return f"nn.init.{fn}({w})"
        return f"nn.init.{fn}({w}, gain={init.gain:.6g})"
    return None
