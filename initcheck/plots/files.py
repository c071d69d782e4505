"""Writing pictures: the formats we write, checked before any work, and files without timestamps."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


FORMATS = {".png", ".svg", ".pdf"}


def check_path(path: str | os.PathLike[str] | None) -> None:
    """Raise UsageError unless `path` ends in a format we write (the CLI checks before any work)."""
    if path is not None and os.path.splitext(os.fspath(path))[1].lower() not in FORMATS:
        raise UsageError("initcheck", f"cannot draw {os.fspath(path)}: the picture's name must end in .png, .svg or .pdf")


def save(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> None:
    """Write `fig` by its extension, with no date or version in the file: same figure, same bytes."""
    check_path(path)
    import matplotlib

    ext = os.path.splitext(os.fspath(path))[1].lower()
    metadatas: dict[str, dict[str, Any]] = {
        ".png": {"Software": "initcheck"},
        ".svg": {"Date": None, "Creator": "initcheck"},
        ".pdf": {"CreationDate": None, "Creator": "initcheck", "Producer": "initcheck"},
    }
    metadata = metadatas[ext]
    from ..safe_write import write_file  # replaced whole or not at all, even on Ctrl-C

    with matplotlib.rc_context({"svg.hashsalt": "initcheck", "svg.fonttype": "path"}):
        write_file(os.fspath(path), lambda f: fig.savefig(f, format=ext[1:], metadata=metadata, dpi=dpi), force=True)


def short_name(qualname: str) -> str:
    """A layer's name on an axis: its parameter name without the ".weight"."""
    return qualname.removesuffix(".weight")
