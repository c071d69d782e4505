"""Memory sizes as people write them (`4G`, `512M`, `2.5GB`, `1GiB`, bytes) and as initcheck prints them,
and the memory available now. Imports no torch: options.py validates --max-memory with it."""

from __future__ import annotations

import os
import re

# decimal units, as `df -H`, disk makers and initcheck's own messages count; the binary ones spelled out
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")
NO_LIMIT = 0  # --max-memory none (or 0): no guard at all
OFF_WORDS = ("none", "off", "0")

MAX_MEMORY_FRACTION = 0.5  # of the memory free now: the model, the activations and the OS need the rest


def parse_size(text: str) -> int:
    """`4G` -> 4e9 bytes, `512M`, `2.5GB`, `1GiB`, `123` (bytes); `none`/`off`/`0` -> NO_LIMIT.
    A ValueError says what the text is not."""
    word = text.strip().lower()
    if word in OFF_WORDS:
        return NO_LIMIT
    m = _SIZE.fullmatch(word)
    if m is None or m.group(2) not in _UNITS:
        raise ValueError("not a size (write it as 4G, 512M, 2.5GB, 1GiB, a number of bytes, or none)")
    n = float(m.group(1)) * _UNITS[m.group(2)]
    if n < 1:
        raise ValueError("not a size (under one byte; write none or 0 for no limit)")
    if n > 2**62:
        raise ValueError("not a size (beyond any machine's memory)")
    return int(n)


def human_bytes(n: float) -> str:
    """4.2e9 -> "4.2 GB" (decimal units, as parse_size reads them)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover  (the loop returns at TB)


def available_memory() -> int | None:
    """Bytes of RAM available now without swapping (Linux's MemAvailable; elsewhere the free pages
    the OS reports), or None when the system says nothing."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")  # macOS and the BSDs: free pages (a floor of what is available)
        size = os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None
    return pages * size if pages > 0 and size > 0 else None
