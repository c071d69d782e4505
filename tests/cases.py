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


class SpatialTransformer(nn.Module):
    """PyTorch's spatial transformer tutorial (Jaderberg et al. 2015): the localization head's last
    Linear starts at weight 0, bias = the identity transform, and its 6 outputs are theta's six
    coefficients, each with its own role in affine_grid: not interchangeable units, so not the
    symmetry problem. With theta the identity, grid_sample returns its input at the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.localization = nn.Sequential(nn.Conv2d(1, 8, 7), nn.MaxPool2d(2, 2), nn.ReLU(True),
                                          nn.Conv2d(8, 10, 5), nn.MaxPool2d(2, 2), nn.ReLU(True))
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
        self.conv = nn.Conv2d(1, 16, 5)
        self.fc = nn.Linear(16 * 12 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.fc_loc(self.localization(x).view(-1, 90)).view(-1, 2, 3)
        x = F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class FlowWarp(nn.Module):
    """A registration net's flow head (VoxelMorph's, in 2-D): a conv predicts a displacement per
    pixel, added to the identity grid, and the image is read there. Zero-initialized, the warp
    starts at the identity; its two output channels are the x and y displacement: not symmetric."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(2, 16, 3, padding=1)
        self.flow = nn.Conv2d(16, 2, 3, padding=1)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
        self.register_buffer("identity", torch.stack((xs, ys), -1).unsqueeze(0))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        flow = self.flow(F.leaky_relu(self.enc(torch.cat((moving, fixed), 1)), 0.2))
        return F.grid_sample(moving, self.identity + flow.permute(0, 2, 3, 1), align_corners=True)


def squash(s: torch.Tensor) -> torch.Tensor:
    n2 = (s ** 2).sum(-1, keepdim=True)
    return n2 / (1 + n2) * s / torch.sqrt(n2 + 1e-8)


class CapsNet(nn.Module):
    """Sabour et al. 2017 as the public PyTorch ports write it: primary capsules squashed, W of
    [1, routes, capsules, 16, 8] drawn N(0, 1) and applied as W @ u (one 8 -> 16 matrix per route
    and capsule), routing logits that start as torch.zeros in forward (uniform coupling 1/routes),
    three routing iterations (one: the coupling is the zeros' softmax alone), a reconstruction
    decoder on the capsules. The squash bounds every
    capsule's norm below 1, so N(0, 1) is its scale: no explosion, and the decoder reads the small
    squashed capsules."""

    def __init__(self, iterations: int = 3) -> None:
        super().__init__()
        self.iterations = iterations
        self.conv1 = nn.Conv2d(1, 64, 9)
        self.prim = nn.Conv2d(64, 64, 9, stride=2)
        self.W = nn.Parameter(torch.randn(1, 288, 10, 16, 8))
        self.dec = nn.Sequential(nn.Linear(160, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = squash(self.prim(F.relu(self.conv1(x))).view(x.size(0), 8, -1).transpose(1, 2))
        u_hat = (self.W @ u[:, :, None, :, None]).squeeze(-1)
        b = torch.zeros(x.size(0), 288, 10, 1, device=x.device)
        for i in range(self.iterations):
            v = squash((F.softmax(b, dim=1) * u_hat).sum(1, keepdim=True))
            if i < self.iterations - 1:
                b = b + (u_hat * v).sum(-1, keepdim=True)
        v = v.squeeze(1)
        return self.dec(v.flatten(1)), v.norm(dim=-1)


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


class MagnitudePreservingConv(nn.Module):
    """EDM2's MPConv (Karras et al. 2024): the stored weight is N(0, 1); forward normalizes each
    output filter to norm sqrt(fan_in) (after `.float()`, with torch.linalg.vector_norm) and scales
    by gain / sqrt(fan_in), so the conv receives filters of norm `gain`: std 1/sqrt(fan_in), LeCun's."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        w = self.weight.float()
        n = w[0].numel()
        w = w / (torch.linalg.vector_norm(w, dim=[1, 2, 3], keepdim=True) / n ** 0.5 + 1e-4)
        return F.conv2d(x, w * (gain / n ** 0.5), padding=1)


class MagnitudePreservingNet(nn.Module):
    """EDM2's magnitude-preserving blocks: mp_silu = silu(x) / 0.596 (E[silu(z)^2] = 0.355 for unit z,
    so it keeps unit magnitude), MPConvs, an mp_sum of the skip and the branch, and an output conv
    whose gain is a learned scalar initialized to 0 (a zero output, deliberate). Sound: every signal
    stays near unit rms; every weight is used through its normalization, none is 'unused'."""

    def __init__(self, c: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.inp = MagnitudePreservingConv(3, c)
        self.blocks = nn.ModuleList(nn.ModuleList([MagnitudePreservingConv(c, c), MagnitudePreservingConv(c, c)])
                                    for _ in range(blocks))
        self.out = MagnitudePreservingConv(c, 3)
        self.out_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for c1, c2 in self.blocks:
            h = c2(F.silu(c1(F.silu(x) / 0.596)) / 0.596)
            x = (0.7 * x + 0.3 * h) / (0.7 ** 2 + 0.3 ** 2) ** 0.5
        return self.out(x, gain=self.out_gain)


class LearnedQueries(nn.Module):
    """Learned inputs broadcast over the batch: Perceiver's latent array (torch.randn, std 1,
    `latents.expand(b, -1, -1)`) read by a LayerNorm and a cross-attention, and DETR's object queries
    (an nn.Embedding's weight read directly, `.unsqueeze(0).repeat(b, 1, 1)`). Both are the signal
    itself, not weights with fans: reported as tokens, never 'unused' (IC001); std 1 ahead of a
    pre-norm is sound."""

    def __init__(self, d: int = 64, latents: int = 16, queries: int = 8, cin: int = 32) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, d))
        self.query_embed = nn.Embedding(queries, d)
        self.norm_in, self.norm_lat, self.norm_q = nn.LayerNorm(cin), nn.LayerNorm(d), nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, 1, kdim=cin, vdim=cin, batch_first=True)
        self.decode = nn.MultiheadAttention(d, 4, batch_first=True)
        self.head = nn.Linear(d, 10)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        b = data.shape[0]
        x = self.latents.unsqueeze(0).expand(b, -1, -1)
        c = self.norm_in(data)
        x = x + self.cross(self.norm_lat(x), c, c, need_weights=False)[0]
        q = self.query_embed.weight.unsqueeze(0).repeat(b, 1, 1)
        q = q + self.decode(self.norm_q(q), x, x, need_weights=False)[0]
        return self.head(q)


class EqualizedConv(nn.Module):
    """StyleGAN's equalized learning rate: the stored weight is N(0, 1) and forward scales it by
    1/sqrt(fan_in); the bias is added reshaped (`x + bias.view(1, -1, 1, 1)`), then leaky ReLU(0.2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.gain = (cin * 9) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.gain, padding=1)
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * 2 ** 0.5


class EqualizedDiscriminator(nn.Module):
    """Four equalized convs and a linear head, no norm, no residual. With its own init each conv
    receives std 1/sqrt(fan_in) and the sqrt(2) after the leaky ReLU keeps the signal: sound.
    `normal_std` redraws every stored weight at that std (a generic N(0, 0.02) init applied over
    equalized layers, a real bug): the convs then receive 0.02/sqrt(fan_in), 50x below in std,
    2500x in variance, and the signal dies in four layers. An add of a reshaped bias is a shift:
    no conv here ends a residual branch, so none may be excused as a 'scaled-down branch end'."""

    def __init__(self, normal_std: float | None = None) -> None:
        super().__init__()
        self.convs = nn.Sequential(EqualizedConv(3, 32), EqualizedConv(32, 32), EqualizedConv(32, 32),
                                   EqualizedConv(32, 32))
        self.head = nn.Linear(32, 1)
        if normal_std is not None:
            for conv in self.convs:
                nn.init.normal_(conv.weight, std=normal_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).mean((2, 3)))


class LoRALinear(nn.Module):
    """peft's LoRA around a frozen base Linear: lora_A at kaiming_uniform(a=sqrt(5)) (PyTorch's
    default, 5-6x below Xavier for a rank-8 layer), lora_B zeros, output base(x) + B(A(x)) * alpha/r.
    Sound: B = 0 makes the branch's output zero, so nothing downstream sees A's scale at init (it only
    sets B's first gradient); the base weight is frozen (requires_grad=False: pretrained in practice),
    not an init to judge, and a fix must never redraw it."""

    def __init__(self, cin: int, cout: int, r: int = 8) -> None:
        super().__init__()
        self.base = nn.Linear(cin, cout)
        self.base.requires_grad_(False)
        self.lora_A, self.lora_B = nn.Linear(cin, r, bias=False), nn.Linear(r, cout, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=5 ** 0.5)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * 2.0


class LoRAAdapted(nn.Module):
    """Two LoRA-wrapped layers with ReLU and a new head. `frozen_std` redraws the frozen base weights
    at that std (a 'pretrained' scale far from any init scheme)."""

    def __init__(self, frozen_std: float | None = None) -> None:
        super().__init__()
        self.l1, self.l2, self.head = LoRALinear(64, 128), LoRALinear(128, 128), nn.Linear(128, 10)
        if frozen_std is not None:
            with torch.no_grad():
                self.l1.base.weight.normal_(0.0, frozen_std)
                self.l2.base.weight.normal_(0.0, frozen_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.l2(torch.relu(self.l1(x)))))


class LSTMCellDecoder(nn.Module):
    """A step-by-step decoder (pytorch/examples' time_sequence_prediction, seq2seq decoders): an
    embedding, nn.LSTMCell(128, 128) called once per step in a Python loop, a head per step. At
    PyTorch's default (U(+-1/sqrt(128))) a gate's pre-activation has rms about 0.6: sound. With
    `unit_normal` its weights are N(0, 1): 128 input terms of variance 1 put the gates' rms over
    sqrt(128) = 11, far past tanh's and sigmoid's knee: saturated (IC203)."""

    def __init__(self, unit_normal: bool = False, steps: int = 6) -> None:
        super().__init__()
        self.emb, self.cell, self.head = nn.Embedding(100, 128), nn.LSTMCell(128, 128), nn.Linear(128, 100)
        self.steps = steps
        if unit_normal:
            nn.init.normal_(self.cell.weight_ih, 0.0, 1.0)
            nn.init.normal_(self.cell.weight_hh, 0.0, 1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        h = c = x.new_zeros(x.shape[0], 128)
        out = []
        for t in range(self.steps):
            h, c = self.cell(x[:, t], (h, c))
            out.append(self.head(h))
        return torch.stack(out, 1)
