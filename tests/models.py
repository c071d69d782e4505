"""Fixture networks shared by the tests: one small model per situation the checks must handle."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes=(784, 256, 128, 10), act=nn.ReLU, init=None, bias_zero=True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear) and init is not None:
                init(layer.weight)
                if bias_zero:
                    nn.init.zeros_(layer.bias)
    return net


def he(w):
    nn.init.kaiming_normal_(w, nonlinearity="relu")


class FunctionalActs(nn.Module):
    """ReLU in its three fx forms, leaky_relu with a positional slope, tanh after a view."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)
        self.c = nn.Linear(16, 16)
        self.d = nn.Linear(16, 16)
        self.e = nn.Linear(16, 16)

    def forward(self, x):
        x = F.relu(self.a(x))
        x = self.b(x).relu()
        x = torch.relu(self.c(x))
        x = F.leaky_relu(self.d(x), 0.2)
        return torch.tanh(self.e(x).view(-1, 4, 4)).flatten(1)


class Transparent(nn.Module):
    """Dropout, reshape, permute, pooling, padding, indexing and a separate bias between a layer and its ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10, bias=False)
        self.bias = nn.Parameter(torch.zeros(10))
        self.out = nn.Linear(10, 2)

    def forward(self, x):
        x = self.conv(x)
        x = F.dropout(x, 0.1, self.training)
        x = F.pad(x, (1, 1, 1, 1))[:, :, 1:-1, 1:-1]
        x = F.max_pool2d(x, 2).permute(0, 2, 3, 1).permute(0, 3, 1, 2)
        x = F.relu(x)
        x = self.fc(x.reshape(x.shape[0], -1)) + self.bias
        return self.out(F.gelu(x))


class DataDependent(nn.Module):
    """fx cannot trace a branch on a tensor's value."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        if h.sum() > 0:
            h = h * 1.0
        return self.fc2(h)


class CustomWeight(nn.Module):
    """A parameter used through F.linear and a matmul, outside any nn.Linear."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(32, 16))
        self.w2 = nn.Parameter(torch.empty(32, 8))
        nn.init.kaiming_normal_(self.w1, nonlinearity="relu")
        nn.init.xavier_normal_(self.w2)

    def forward(self, x):
        return F.relu(F.linear(x, self.w1)) @ self.w2


class Gated(nn.Module):
    """Hand-written activations: x * sigmoid(x) is SiLU; x * sigmoid(1.702 x) is not sigmoid."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        h = self.a(x)
        h = h * torch.sigmoid(h)
        h = self.b(h)
        h = h * torch.sigmoid(1.702 * h)
        return self.c(h)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class Cube(nn.Module):
    def forward(self, x):
        return x * x * x / 3.0 + x


class CustomModules(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.act = Swish()
        self.b = nn.Linear(16, 16)
        self.odd = Cube()
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        return self.c(self.odd(self.b(self.act(self.a(x)))))


class Block(nn.Module):
    def __init__(self, c, zero_last_bn=False, zero_conv=False):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        if zero_last_bn:
            nn.init.zeros_(self.bn2.weight)
        if zero_conv:
            nn.init.zeros_(self.conv2.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class ResNetish(nn.Module):
    def __init__(self, zero_init_residual=True, blocks=3):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(*[Block(16, zero_last_bn=zero_init_residual) for _ in range(blocks)])
        self.fc = nn.Linear(16, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.blocks(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class FixupBlock(nn.Module):
    """Fixup: no normalization, the branch's last layer zero, a scalar bias and scale."""

    def __init__(self, width, depth):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.scale = nn.Parameter(torch.ones(1))
        nn.init.normal_(self.fc1.weight, 0, math.sqrt(2 / width) * depth ** -0.5)
        nn.init.zeros_(self.fc2.weight)

    def forward(self, x):
        return x + self.scale * self.fc2(F.relu(self.fc1(x)))


class Fixup(nn.Module):
    def __init__(self, width=64, depth=8):
        super().__init__()
        self.inp = nn.Linear(32, width)
        nn.init.kaiming_normal_(self.inp.weight, nonlinearity="relu")
        self.blocks = nn.Sequential(*[FixupBlock(width, depth) for _ in range(depth)])
        self.head = nn.Linear(width, 10)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.blocks(F.relu(self.inp(x))))


class ReZeroBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.alpha * self.fc2(F.relu(self.fc1(x)))


class ReZero(nn.Module):
    def __init__(self, width=64, depth=6):
        super().__init__()
        self.blocks = nn.Sequential(*[ReZeroBlock(width) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class TinyGPT(nn.Module):
    """nanoGPT's init: N(0, 0.02), c_proj at 0.02/sqrt(2 n_layer), zero biases, tied embeddings."""

    def __init__(self, vocab=100, d=64, n_layer=4, seq=16):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList()
        for _ in range(n_layer):
            blk = nn.ModuleDict(dict(ln1=nn.LayerNorm(d), c_attn=nn.Linear(d, 3 * d), c_proj=nn.Linear(d, d),
                                     ln2=nn.LayerNorm(d), c_fc=nn.Linear(d, 4 * d), mlp_proj=nn.Linear(4 * d, d)))
            self.blocks.append(blk)
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if ("c_proj" in name or "mlp_proj" in name) else 0.02
                nn.init.normal_(p, 0.0, std)
        self.d = d

    def forward(self, idx):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            h = blk["ln1"](x)
            q, k, v = blk["c_attn"](h).split(self.d, dim=2)
            att = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d), dim=-1)
            x = x + blk["c_proj"](att @ v)
            x = x + blk["mlp_proj"](F.gelu(blk["c_fc"](blk["ln2"](x))))
        return self.lm_head(self.ln_f(x))


class CallOrder(nn.Module):
    """fc2 is registered before fc1 but called after it."""

    def __init__(self):
        super().__init__()
        self.fc2 = nn.Linear(64, 10)
        self.fc1 = nn.Linear(32, 64)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Shared(nn.Module):
    """One layer called three times."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.shared = nn.Linear(32, 32)
        self.out = nn.Linear(32, 4)

    def forward(self, x):
        x = torch.relu(self.inp(x))
        for _ in range(3):
            x = torch.relu(self.shared(x))
        return self.out(x)


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.gru = nn.GRU(32, 32, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, idx):
        x, _ = self.lstm(self.emb(idx))
        x, _ = self.gru(x)
        return self.head(x[:, -1])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 8)

    def forward(self, x):
        y, _ = self.attn(x, x, x)
        return self.fc(self.norm(x + y))


class Convs(nn.Module):
    """Grouped, depthwise and transposed convolutions, each before a ReLU."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(8, 32, 3, groups=4, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, groups=32, padding=1)
        self.up = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.head = nn.Conv2d(16, 3, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.head:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.grouped(x))
        x = F.relu(self.depthwise(x))
        x = F.relu(self.up(x))
        return self.head(x)


class ConvBN(nn.Module):
    """Conv -> BatchNorm -> ReLU with a badly scaled conv: normalization makes the scale moot."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)
        nn.init.normal_(self.conv.weight, 0.0, 5.0)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


class NoWeights(nn.Module):
    def forward(self, x):
        return torch.relu(x)


class DictInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(4, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, batch):
        return {"logits": self.head(torch.relu(self.a(batch["x"]) + self.b(batch["y"])))}


class HandAttention(nn.Module):
    """A pre-norm transformer block written by hand, at BERT's normal(0, 0.02): token embedding,
    separate or packed q/k/v, eager (matmul, scale, softmax) or SDPA attention, an MLP, a head."""

    def __init__(self, packed: bool = False, sdpa: bool = False, d: int = 64, heads: int = 4, vocab: int = 500):
        super().__init__()
        self.packed, self.sdpa, self.heads = packed, sdpa, heads
        self.emb = nn.Embedding(vocab, d)
        if packed:
            self.qkv = nn.Linear(d, 3 * d)
        else:
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.emb(idx)
        h = self.norm1(x)
        b, t, d = h.shape
        if self.packed:
            q, k, v = self.qkv(h).split(d, dim=-1)
        else:
            q, k, v = self.q(h), self.k(h), self.v(h)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        x = x + self.down(F.gelu(self.up(self.norm2(x))))
        return self.head(x)
