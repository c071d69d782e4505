"""What writing through safe_write costs over a bare torch.save: prints a table (seconds, median of 3)."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from initcheck.safe_write import save


def timed(fn) -> float:
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    print(f"{'state_dict':>12}  {'torch.save':>10}  {'safe save':>10}  {'ratio':>6}")
    for mb in (1, 100, 400):
        sd = {"w": torch.randn(mb * 262_144)}  # 4-byte floats: mb MB
        with tempfile.TemporaryDirectory(dir=".") as d:
            path = os.path.join(d, "f.pt")
            bare = timed(lambda sd=sd, path=path: torch.save(sd, path))
            safe = timed(lambda sd=sd, path=path: save(sd, path, force=True))
        print(f"{mb:>9} MB  {bare:>10.3f}  {safe:>10.3f}  {safe / bare:>6.2f}")


if __name__ == "__main__":
    main()
