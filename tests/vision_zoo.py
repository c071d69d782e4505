"""Small, hand-written classification nets with the architecture and the default init of each
torchvision/timm family (written from the papers' and libraries' descriptions, not copied), for
tests that cannot install torchvision or timm. Each runs on a 3x32x32 input."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# --- init helpers: what each library's constructor does ---------------------------------------------


def tv_conv_init(model: nn.Module, zero_residual: bool = False) -> None:
    """torchvision's ResNet/VGG/MobileNet loop: convs kaiming_normal(fan_out, relu), BN 1/0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def linear_init(model: nn.Module, std: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)


def trunc02(model: nn.Module) -> None:
    """timm/torchvision transformer init: Linear (and conv) trunc_normal(.02), zero bias."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """conv (no bias) -> BatchNorm -> activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --- ResNet / ResNeXt ---------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """ResNet-18-like (two stages); groups > 1 makes the 3x3 convs ResNeXt's grouped ones."""

    def __init__(self, groups: int = 1, zero_init_residual: bool = False, classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.layer1 = nn.Sequential(BasicBlock(32, 32, groups=groups), BasicBlock(32, 32, groups=groups))
        self.layer2 = nn.Sequential(BasicBlock(32, 64, 2, groups), BasicBlock(64, 64, groups=groups))
        self.fc = nn.Linear(64, classes)
        tv_conv_init(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- MobileNet V2 / V3, EfficientNet ------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 reduce -> act -> 1x1 expand -> gate; the gate multiplies the input."""

    def __init__(self, c: int, squeeze: int, act: type[nn.Module], gate: type[nn.Module]) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, squeeze, 1), act(), nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type[nn.Module],
                 se: Callable[[int], nn.Module] | None = None, k: int = 3) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(cbr(cin, mid, 1, act=act))
        layers.append(cbr(mid, mid, k, stride, groups=mid, act=act))
        if se is not None:
            layers.append(se(mid))
        layers.append(cbr(mid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNet(nn.Module):
    """version 2: ReLU6, no SE; 3: hardswish and SE with a hardsigmoid gate; "eff": EfficientNet's
    SiLU and SE with a sigmoid gate. torchvision's init: convs kaiming_normal(fan_out), BN 1/0,
    Linear N(0, 0.01) (EfficientNet: U(+-1/sqrt(out)))."""

    def __init__(self, version: str = "2", classes: int = 10) -> None:
        super().__init__()
        act: type[nn.Module] = {"2": nn.ReLU6, "3": nn.Hardswish, "eff": nn.SiLU}[version]
        se: Callable[[int], nn.Module] | None = None
        if version == "3":
            se = lambda c: SqueezeExcite(c, max(8, c // 4), nn.ReLU, nn.Hardsigmoid)  # noqa: E731
        elif version == "eff":
            se = lambda c: SqueezeExcite(c, max(4, c // 8), nn.SiLU, nn.Sigmoid)  # noqa: E731
        self.stem = cbr(3, 16, stride=2, act=act)
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 1, 1, act, se), InvertedResidual(16, 24, 2, 4, act, se),
                                    InvertedResidual(24, 24, 1, 4, act, se), InvertedResidual(24, 32, 1, 4, act, se, k=5))
        self.head = cbr(32, 128, 1, act=act)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, classes))
        tv_conv_init(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if version == "eff":
                    r = 1.0 / math.sqrt(m.out_features)
                    nn.init.uniform_(m.weight, -r, r)
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- DenseNet, GoogLeNet, ShuffleNetV2, SqueezeNet ---------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, y], 1)


class DenseNet(nn.Module):
    """Pre-activation dense blocks (each layer's output concatenated to its input), a transition
    (BN, ReLU, 1x1 conv, avg-pool). torchvision: kaiming_normal (fan_in), BN 1/0, Linear bias 0."""

    def __init__(self, growth: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        c = 16
        block1 = []
        for _ in range(3):
            block1.append(DenseLayer(c, growth))
            c += growth
        self.block1 = nn.Sequential(*block1)
        self.trans = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2))
        c //= 2
        block2 = []
        for _ in range(3):
            block2.append(DenseLayer(c, growth))
            c += growth
        self.block2 = nn.Sequential(*block2)
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.block2(self.trans(self.block1(self.stem(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; pool-1x1) concatenated, unequal widths."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = cbr(cin, c1, 1)
        self.b2 = nn.Sequential(cbr(cin, c3r, 1), cbr(c3r, c3, 3))
        self.b3 = nn.Sequential(cbr(cin, c5r, 1), cbr(c5r, c5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), cbr(cin, cp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's init: convs and Linear trunc_normal(std=0.01, a=-2, b=2), BN 1/0."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 32, 3), nn.MaxPool2d(3, 2, 1))
        self.i3a = Inception(32, 16, 16, 24, 4, 8, 8)
        self.i3b = Inception(56, 24, 24, 32, 8, 16, 16)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(88, classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.i3b(self.i3a(self.stem(x)))
        return self.fc(self.drop(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(cbr(cin, cin, 3, stride, groups=cin, act=None), cbr(cin, half, 1))
        bin_ = cin if stride > 1 else half
        self.branch2 = nn.Sequential(cbr(bin_, half, 1), cbr(half, half, 3, stride, groups=half, act=None), cbr(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Channel split, two branches, concatenation, shuffle. torchvision leaves PyTorch's defaults."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 24, 3), nn.MaxPool2d(3, 2, 1))
        self.stage = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 48, 1))
        self.conv5 = cbr(48, 128, 1)
        self.fc = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stage(self.stem(x)))
        return self.fc(x.mean([2, 3]))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1(s)), F.relu(self.expand3(s))], 1)


class SqueezeNet(nn.Module):
    """Fire modules; no BN; a conv classifier. torchvision: kaiming_uniform (fan_in, a=0), bias 0;
    final conv N(0, 0.01)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(32, 8, 32, 32), Fire(64, 8, 32, 32), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(64, 16, 48, 48))
        self.final_conv = nn.Conv2d(96, classes, 1)
        self.classifier = nn.Sequential(nn.Dropout(0.5), self.final_conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is self.final_conv:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- AlexNet, VGG -------------------------------------------------------------------------------------


class AlexNet(nn.Module):
    """Big-kernel convs with max-pools, a dropout-linear-relu classifier; PyTorch's default init."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, 2, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(64 * 4, 512), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG(nn.Module):
    """3x3 conv stacks and max-pools, a big classifier with dropout. torchvision: kaiming_normal
    (fan_out), bias 0; BN 1/0; Linear N(0, 0.01), bias 0."""

    def __init__(self, batch_norm: bool = True, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in (16, "M", 32, 32, "M", 64, 64, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            assert isinstance(v, int)
            layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if batch_norm else []) + [nn.ReLU(True)]
            c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(64 * 16, 256), nn.ReLU(True), nn.Dropout(0.5),
                                        nn.Linear(256, 256), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(256, classes))
        tv_conv_init(self)
        linear_init(self, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# --- ConvNeXt, ViT, Swin, MLP-Mixer ------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pwconv1, self.pwconv2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Patchify stem, depthwise 7x7, LayerNorm, inverted MLP with GELU, layer scale 1e-6;
    trunc_normal(.02) on convs and Linear, zero bias."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 4, 4), LayerNorm2d(32))
        self.stage1 = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
        self.down = nn.Sequential(LayerNorm2d(32), nn.Conv2d(32, 64, 2, 2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(64), ConvNeXtBlock(64))
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, classes)
        trunc02(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean([2, 3])))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, tokens_side: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.side = tokens_side
        if tokens_side is not None:  # Swin's relative position bias, one entry per offset and head
            s = tokens_side
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * s - 1) ** 2, heads))
            coords = torch.stack(torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")).flatten(1)
            rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (s - 1)
            self.register_buffer("relative_position_index", rel[..., 0] * (2 * s - 1) + rel[..., 1], persistent=False)
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)
        if self.side is not None:
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
            scores = scores + bias.permute(2, 0, 1).unsqueeze(0)
        y = scores.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    def __init__(self, d: int, heads: int, tokens_side: int | None = None) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads, tokens_side)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """timm's ViT: patch embedding, cls token N(0, 1e-6), position embedding trunc_normal(.02),
    pre-norm blocks, Linear trunc_normal(.02), head zero."""

    def __init__(self, d: int = 64, depth: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 65, d))
        self.blocks = nn.Sequential(*[TransformerBlock(d, 4) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
        trunc02(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class PatchMerging(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * d), nn.Linear(4 * d, 2 * d, bias=False)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        b, n, d = x.shape
        x = x.view(b, side // 2, 2, side // 2, 2, d).permute(0, 1, 3, 4, 2, 5).reshape(b, n // 4, 4 * d)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    """Swin-like: patch embedding + LayerNorm, window attention with a relative position bias table
    (one window of 4x4 tokens here), patch merging; trunc_normal(.02), zero biases."""

    def __init__(self, d: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 4, 4)
        self.embed_norm = nn.LayerNorm(d)
        self.stage1 = nn.ModuleList([TransformerBlock(d, 2, 4), TransformerBlock(d, 2, 4)])
        self.merge = PatchMerging(d)
        self.stage2 = nn.ModuleList([TransformerBlock(2 * d, 4, 2), TransformerBlock(2 * d, 4, 2)])
        self.norm = nn.LayerNorm(2 * d)
        self.head = nn.Linear(2 * d, classes)
        trunc02(self)

    def windows(self, x: torch.Tensor, side: int, win: int) -> torch.Tensor:
        b, n, d = x.shape
        g = side // win
        return x.view(b, g, win, g, win, d).permute(0, 1, 3, 2, 4, 5).reshape(b * g * g, win * win, d)

    def unwindows(self, x: torch.Tensor, b: int, side: int, win: int) -> torch.Tensor:
        g, d = side // win, x.shape[-1]
        return x.view(b, g, g, win, win, d).permute(0, 1, 3, 2, 4, 5).reshape(b, side * side, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = self.embed_norm(self.patch_embed(x).flatten(2).transpose(1, 2))  # 8x8 tokens
        for blk in self.stage1:
            x = self.unwindows(blk(self.windows(x, 8, 4)), b, 8, 4)
        x = self.merge(x, 8)  # 4x4 tokens
        for blk in self.stage2:
            x = self.unwindows(blk(self.windows(x, 4, 2)), b, 4, 2)
        return self.head(self.norm(x).mean(1))


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, d: int) -> None:
        super().__init__()
        self.norm1, self.tok1, self.tok2 = nn.LayerNorm(d), nn.Linear(tokens, 2 * tokens), nn.Linear(2 * tokens, tokens)
        self.norm2, self.ch1, self.ch2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x).transpose(1, 2)
        x = x + self.tok2(F.gelu(self.tok1(y))).transpose(1, 2)
        return x + self.ch2(F.gelu(self.ch1(self.norm2(x))))


class Mixer(nn.Module):
    """MLP-Mixer (timm): stem conv LeCun normal, token and channel MLPs xavier_uniform with bias
    N(0, 1e-6) on the MLPs, head zero."""

    def __init__(self, d: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, d, 4, 4)
        self.blocks = nn.Sequential(MixerBlock(64, d), MixerBlock(64, d))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)
        fan_in = self.stem.weight[0].numel()
        nn.init.trunc_normal_(self.stem.weight, std=1.0 / math.sqrt(fan_in) / 0.87962566103423978)
        nn.init.zeros_(self.stem.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


# --- RegNet, NFNet ------------------------------------------------------------------------------------


class RegNetBlock(nn.Module):
    """1x1 -> grouped 3x3 -> SE (sigmoid gate) -> 1x1 (no activation), added to the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 8) -> None:
        super().__init__()
        self.a = cbr(cin, cout, 1)
        self.b = cbr(cout, cout, 3, stride, groups=cout // group_width)
        self.se = SqueezeExcite(cout, max(4, cin // 4), nn.ReLU, nn.Sigmoid)
        self.c = cbr(cout, cout, 1, act=None)
        self.proj = None if stride == 1 and cin == cout else cbr(cin, cout, 1, stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(self.se(self.b(self.a(x))))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class RegNet(nn.Module):
    """RegNetY-like. torchvision: convs N(0, sqrt(2/fan_out)), BN 1/0, Linear N(0, 0.01), bias 0."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = cbr(3, 16, 3, 2)
        self.s1 = nn.Sequential(RegNetBlock(16, 24, 2), RegNetBlock(24, 24, 1))
        self.s2 = nn.Sequential(RegNetBlock(24, 48, 2), RegNetBlock(48, 48, 1))
        self.fc = nn.Linear(48, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        linear_init(self, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s2(self.s1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class GainConv(nn.Conv2d):
    """A conv with NF-Net's learnable per-output-channel gain (1 at init) on its weight."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride, k // 2, groups=groups)
        self.gain = nn.Parameter(torch.ones(cout, 1, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.gain, self.bias)


class NFBlock(nn.Module):
    """Normalizer-free pre-activation block: x + alpha * f(x / beta), skip-init alpha 0, an SE on
    the branch; gamma-scaled GELU keeps each layer variance-preserving."""

    def __init__(self, c: int, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.conv1, self.conv2, self.conv3 = GainConv(c, c, 1), GainConv(c, c, 3, groups=c // 8), GainConv(c, c, 1)
        self.attn_last = SqueezeExcite(c, c // 4, nn.ReLU, nn.Sigmoid)
        self.skipinit_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = 1.7015043497085571  # timm's gamma for GELU: restores unit variance after it
        y = self.conv1(F.gelu(x / self.beta) * g)
        y = self.conv3(F.gelu(self.conv2(F.gelu(y) * g)) * g)
        return x + 0.2 * self.skipinit_gain * (2.0 * self.attn_last(y))


class NFNet(nn.Module):
    """NF-ResNet-like: no normalization layer; gained convs; skip-init; SE gate on each branch."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = GainConv(3, 32, 3, 2)
        self.blocks = nn.Sequential(NFBlock(32, 1.0), NFBlock(32, math.sqrt(1.0 + 0.2 ** 2)))
        self.final = GainConv(32, 64, 1)
        self.fc = nn.Linear(64, classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.final(self.blocks(self.stem(x))))
        return self.fc(x.mean([2, 3]))


ZOO: dict[str, Callable[[], nn.Module]] = {
    "resnet18": ResNet,
    "resnet18_zero_init_residual": lambda: ResNet(zero_init_residual=True),
    "resnext": lambda: ResNet(groups=8),
    "mobilenet_v2": lambda: MobileNet("2"),
    "mobilenet_v3": lambda: MobileNet("3"),
    "efficientnet": lambda: MobileNet("eff"),
    "densenet": DenseNet,
    "googlenet": GoogLeNet,
    "shufflenet_v2": ShuffleNetV2,
    "squeezenet": SqueezeNet,
    "alexnet": AlexNet,
    "vgg_bn": VGG,
    "vgg": lambda: VGG(batch_norm=False),
    "convnext": ConvNeXt,
    "vit": ViT,
    "swin": Swin,
    "mixer": Mixer,
    "regnet": RegNet,
    "nfnet": NFNet,
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named model built under a fixed seed (the global RNG restored after)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return ZOO[name]()
    finally:
        torch.random.set_rng_state(state)


def table() -> str:
    """The zoo table for docs/zoo.md: per model, parameters reported, fan weights judged, findings."""
    from collections import Counter

    from initcheck import diagnose

    rows = ["| model | tracer | parameters reported | weight layers judged | errors | warnings |", "|---|---|---|---|---|---|"]
    for name in ZOO:
        model = build(name)
        r = diagnose(model)
        count = Counter((f.severity.value, f.code) for f in r.findings)
        errors = ", ".join(f"{n} {c}" for (s, c), n in sorted(count.items()) if s == "error") or "none"
        warnings = ", ".join(f"{n} {c}" for (s, c), n in sorted(count.items()) if s == "warning") or "none"
        total = sum(1 for _ in model.parameters())
        rows.append(f"| {name} | {r.tracer} | {len(r.params)} of {total} | {len(r.layers)} | {errors} | {warnings} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
