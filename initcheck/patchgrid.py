"""The image a patch-embedding model takes, read from its weights when it stores no image size
(vit-pytorch's ViT): a position table of N rows of width D, and a Linear patch projection into D
whose input is p·p·c (a flattened p×p patch of c channels). N is the number of patches, plus one
for a class token when N - 1 is the square, so the image side is sqrt(patches)·p."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import nn

# the names position tables go by: pos_embedding (vit-pytorch), pos_embed (timm), position_embeddings (HF)
POSITION_NAME = re.compile(r"pos(ition)?(al)?_?emb")


@dataclass(frozen=True)
class PatchGrid:
    """One reading of the model's weights as an image cut into patches."""

    channels: int
    side: int  # image side, pixels
    patch: int  # patch side, pixels
    position: str  # the position table's name
    projection: str  # the patch projection's name
    class_token: bool  # the table has one row more than the patches

    def source(self) -> str:
        grid = self.side // self.patch
        extra = " + 1 class token" if self.class_token else ""
        return (f"position table {self.position} ({grid}x{grid} patches{extra}) and patch projection "
                f"{self.projection} ({self.patch}x{self.patch}x{self.channels})")


def patch_grids(model: nn.Module, channels: Sequence[int]) -> Iterator[PatchGrid]:
    """Every consistent reading, most likely first: the first position table, the first Linear
    into its width, the channel counts in the order given (the model's own, then 3, then 1). None
    for a model with an Embedding: it looks tokens up, its position table counts tokens."""
    if any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules()):
        return
    seen: set[tuple[int, int]] = set()
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for pname, param in model.named_parameters():
        rows_width = _table(pname, tuple(param.shape))
        if rows_width is None:
            continue
        rows, width = rows_width
        found = next(((n, m) for n, m in linears if m.out_features == width), None)
        if found is None:
            continue
        lname, linear = found
        for c in dict.fromkeys(channels):
            patch = _square_root(linear.in_features // c) if c > 0 and linear.in_features % c == 0 else None
            if patch is None:
                continue
            for n, token in ((rows - 1, True), (rows, False)):
                grid = _square_root(n)
                if grid is not None and (c, grid * patch) not in seen:
                    seen.add((c, grid * patch))
                    yield PatchGrid(c, grid * patch, patch, pname, lname, token)


def _table(name: str, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(rows, width) of a position table: (1, N, D) or (N, D), N of at least 2."""
    if not POSITION_NAME.search(name.lower()):
        return None
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or shape[0] < 2:
        return None
    return shape[0], shape[1]


def _square_root(n: int) -> int | None:
    root = math.isqrt(n) if n > 0 else 0
    return root if root > 0 and root * root == n else None
