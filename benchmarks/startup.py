"""Start-up time of the command line: `initcheck --help` / `--version` beside `python -c "import torch"`
(what every command cost before the lazy imports) and a real check of a small model.

python benchmarks/startup.py [--repeat N]   prints a table of medians over N fresh processes
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "initcheck --help": [sys.executable, "-m", "initcheck", "--help"],
    "initcheck --version": [sys.executable, "-m", "initcheck", "--version"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "initcheck examples/seeds.py:He": [sys.executable, "-m", "initcheck", os.path.join(ROOT, "examples", "seeds.py") + ":He"],
}


def seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for cmd in CASES.values():  # warm the file cache once
        seconds(cmd)
    print(f"| command | median of {args.repeat} (s) | min (s) |")
    print("|---|---|---|")
    for name, cmd in CASES.items():
        times = [seconds(cmd) for _ in range(args.repeat)]
        print(f"| `{name}` | {statistics.median(times):.3f} | {min(times):.3f} |")


if __name__ == "__main__":
    main()
