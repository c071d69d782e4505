"""Init bugs and sound-but-unusual inits, each built from a pattern seen in public code. The
expectation of each is written from the physics of the case (in its docstring), not from a run."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --- bugs: each must give at least a warning on the named parameter --------------------------------

class NaNWeight(nn.Module):
    """A NaN in a hidden weight: every output is NaN. IC104 on fc1.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 10)
        with torch.no_grad():
            self.fc1.weight[3, 5] = float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class InfNormWeight(nn.Module):
    """An infinite LayerNorm scale. IC104 on ln.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.ln, self.out = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)
        with torch.no_grad():
            self.ln.weight[0] = float("inf")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.ln(self.fc(x))))


class ToEmptyNeverInitialized(nn.Module):
    """Built on the meta device, moved with to_empty() and never initialized: the memory holds
    garbage such as 1e18 (set explicitly here, since what to_empty leaves is arbitrary). IC105 on
    fc1.weight and fc2.bias."""

    def __init__(self) -> None:
        super().__init__()
        with torch.device("meta"):
            self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 10)
        self.to_empty(device="cpu")
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0.0, 0.05)
            self.fc1.weight[0, :4] = 1e18
            self.fc2.bias.fill_(-3e20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class ZeroLayerNorm(nn.Module):
    """LayerNorm weight 0 in the trunk: the head sees the shift alone, no signal, no gradient.
    IC106 (error) on ln.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.ln, self.out = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)
        nn.init.zeros_(self.ln.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.ln(self.fc(x))))


class SwappedLayerNorm(ZeroLayerNorm):
    """Weight and bias swapped by a bad load (weight 0, bias 1): IC106 on ln.weight and IC107
    (shift rms 1 ... made 2 here, over the limit of 1) on ln.bias."""

    def __init__(self) -> None:
        super().__init__()
        nn.init.constant_(self.ln.bias, 2.0)


class ZeroBatchNormPlainCNN(nn.Module):
    """A BatchNorm with γ = 0 in a plain CNN (no residual): its output is β = 0, the net is dead.
    IC106 (error) on bn.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Linear(16, 10)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.conv(x))).mean((2, 3)))


class TiedUnitEmbedding(nn.Module):
    """An N(0, 1) embedding (d = 384) tied to the head, after a LayerNorm: logits have std
    1 * sqrt(384) * 1 ≈ 19.6 (whisper's default init). IC206 on emb.weight."""

    d = 384

    def __init__(self, std: float = 1.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(1000, self.d)
        self.mix = nn.Linear(self.d, self.d)
        self.ln = nn.LayerNorm(self.d)
        self.head = nn.Linear(self.d, 1000, bias=False)
        self.head.weight = self.emb.weight
        nn.init.normal_(self.emb.weight, std=std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        x = x + F.gelu(self.mix(x))
        return self.head(self.ln(x))


class NormFreeResidual(nn.Module):
    """30 residual blocks x + W relu(x), no normalization, He-initialized branches: each block adds
    a branch of the stream's own variance, so the variance doubles per block, 2^30 ≈ 1e9 after 30
    (rms 3e4). IC201 whatever the reference does; the fix names depth-scaled branches."""

    def __init__(self, depth: int = 30, width: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(16, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, 4)
        for b in self.blocks:
            nn.init.kaiming_normal_(b.weight, nonlinearity="relu")
            nn.init.zeros_(b.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for b in self.blocks:
            x = x + b(F.relu(x))
        return self.out(x)


class DepthwiseFanOutNoNorm(nn.Module):
    """torchvision's kaiming_normal(mode='fan_out') on a depthwise 3x3 conv with no norm after it:
    torch's fan_out counts all 64 channels (576), while each output sums 9 inputs, so the variance
    is 64x below He's and the signal after it shrinks 8x in rms. Not a convention here: IC103 on
    dw.weight (a warning at least)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 64, 1)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.pw = nn.Conv2d(64, 10, 1)
        for m in (self.inp, self.dw, self.pw):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(F.relu(self.dw(F.relu(self.inp(x)))))


class SharedTanhUnitNormal(nn.Module):
    """One tanh Linear (width 256) with N(0, 1) weights called 4 times: its pre-activation rms is
    sqrt(256) = 16 at the first call, far past tanh's knee. IC203 on shared.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(32, 256)
        self.shared = nn.Linear(256, 256)
        self.out = nn.Linear(256, 4)
        nn.init.normal_(self.shared.weight, std=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for _ in range(4):
            x = torch.tanh(self.shared(x))
        return self.out(x)


# --- sound but unusual: no error -----------------------------------------------------------------

class AdaLNZeroBlock(nn.Module):
    """DiT's adaLN-Zero: a zero-initialized modulation Linear gives shift, scale and gate; the
    gate multiplies the branch, so each output unit meets its own channel: not symmetric, and the
    zero gate makes the block the identity at init (Peebles & Xie 2023). No error."""

    def __init__(self, d: int = 64) -> None:
        super().__init__()
        self.cond = nn.Linear(16, d)
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ada = nn.Linear(d, 3 * d)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = F.silu(self.cond(x))
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        h = c + gate * self.mlp(self.norm(c) * (1 + scale) + shift)
        return self.head(h)


class RWKVTimeMix(nn.Module):
    """RWKV-4's time mixing with its own zeros (BlinkDL's init): the key, receptance and output
    projections start at 0. The keys go through exp to weigh each channel's values over time: at 0
    the average is uniform, and key unit c gets the gradient of its own channel's values, so the
    units differ after one step (not symmetric); the receptance gates its channel through a
    sigmoid; the output ends the residual branch. No error, no IC101."""

    def __init__(self, d: int = 64) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.mix = nn.Parameter(torch.rand(1, 1, d))
        self.key, self.value, self.receptance, self.output = (nn.Linear(d, d, bias=False) for _ in range(4))
        for lin in (self.key, self.receptance, self.output):
            nn.init.zeros_(lin.weight)
        nn.init.orthogonal_(self.value.weight)
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        shifted = F.pad(h, (0, 0, 1, -1))
        xm = h * self.mix + shifted * (1 - self.mix)
        w = torch.exp(self.key(xm))
        wkv = torch.cumsum(w * self.value(xm), dim=1) / torch.cumsum(w, dim=1)
        return self.head(x + self.output(torch.sigmoid(self.receptance(xm)) * wkv))


class FiLMResBlock(nn.Module):
    """guided-diffusion's ResBlock: a SiLU then a Linear of the time embedding, split into a scale
    that multiplies the normed features and a shift added to them, then SiLU and a zeroed conv.
    The SiLU after the sum is the features' activation, not the embedding layer's: emb.1 feeds a
    modulation (identity, gated), and PyTorch's default there is a small modulation, which is
    benign (adaLN-Zero zeroes it). No error, no IC103 on emb.1."""

    def __init__(self, ch: int = 32, ed: int = 256) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(ch, ch, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(ed, 2 * ch))
        self.norm = nn.GroupNorm(8, ch)
        self.conv_out = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        self.head = nn.Conv2d(ch, 3, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        scale, shift = self.emb(t)[..., None, None].chunk(2, dim=1)
        h = F.silu(self.norm(h) * (1 + scale) + shift)
        return self.head(x + self.conv_out(h))


class Sine(nn.Module):
    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


class Siren(nn.Module):
    """SIREN (Sitzmann et al. 2020) with its own init: sin(30·(Wx + b)); first layer
    U(-1/n, 1/n), hidden U(±sqrt(6/n)/30). Pre-activations of the first layer span several
    periods on purpose; sin is bounded. No error; the layers are named as SIREN's scheme."""

    def __init__(self, hidden: int = 128, depth: int = 3, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = w0
        self.first = nn.Linear(2, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.first.weight.uniform_(-1 / 2, 1 / 2)
            for h in self.hidden:
                bound = math.sqrt(6 / hidden) / w0
                h.weight.uniform_(-bound, bound)
            self.out.weight.uniform_(-math.sqrt(6 / hidden) / w0, math.sqrt(6 / hidden) / w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sin(self.w0 * self.first(x))
        for h in self.hidden:
            x = torch.sin(self.w0 * h(x))
        return self.out(x)


class ZeroInitResidualBN(nn.Module):
    """torchvision's zero_init_residual: the last BN of each residual branch starts at γ = 0, so
    each block is the identity at init (Goyal et al. 2017). No IC106."""

    def __init__(self, c: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(blocks))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(blocks))
        for bn in self.bns:
            nn.init.zeros_(bn.weight)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for conv, bn in zip(self.convs, self.bns):
            x = F.relu(x + bn(conv(x)))
        return self.head(x.mean((2, 3)))


class TinyViT(nn.Module):
    """vit-pytorch's own init: cls token and position embedding torch.randn (N(0, 1)), LayerScale
    γ = 1e-5 (CaiT). It trains fine. No error; every parameter listed with its kind."""

    def __init__(self, d: int = 32, patches: int = 16) -> None:
        super().__init__()
        self.patch = nn.Linear(48, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.randn(1, patches + 1, d))
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.gamma = nn.Parameter(1e-5 * torch.ones(d))
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [b, patches, 48]
        x = self.patch(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        x = x + self.gamma * self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x[:, 0])


class WeightNormed(nn.Module):
    """PyTorch's own weight_norm parametrization: the effective weight is judged; the originals
    (g, v) are not 'unused'. No IC001."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.utils.parametrizations.weight_norm(nn.Linear(32, 64))
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class StandardizedConv(nn.Module):
    """Weight standardization written out (BiT's StdConv): each output filter is centred and scaled to
    unit std inside forward, then F.conv2d, then GroupNorm and ReLU. The scale is normalized away by
    the GroupNorm, so the init is sound; the weight is used (rebuilt), never 'unused' (no IC001)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(32, 3, 3, 3))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.gn, self.head = nn.GroupNorm(8, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        y = F.relu(self.gn(F.conv2d(x, w, padding=1)))
        return self.head(y.mean((2, 3)))
