"""The README's two pictures, for examples/seeds.py:TanhNormal001 (five tanh layers with N(0, 0.01)
weights): docs/signal.png, the predicted signal per layer (what `initcheck examples/seeds.py:TanhNormal001
--plot docs/signal.png` draws), and docs/probe_hist.png, the probe's histograms before and after
initcheck.fix (`plots.compare(probe(model, batch), probe(fixed, batch))`; one model alone:
`initcheck.probe(model, batch).plot("hist.png")`, what `--probe --plot hist.png` draws). Run: python examples/make_pictures.py [--out docs]   (needs `pip install initcheck[plot]`)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seeds

import initcheck
from initcheck import plots
from initcheck.api import analyze


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs"))
    args = parser.parse_args()
    torch.manual_seed(0)  # the CLI's default --seed: the same weights as `initcheck examples/seeds.py:TanhNormal001`
    model = seeds.TanhNormal001()
    plots.signal_plot(analyze(model, target="TanhNormal001"), os.path.join(args.out, "signal.png"),
                      title="TanhNormal001: predicted signal per layer")
    batch = torch.randn(256, 784, generator=torch.Generator().manual_seed(1))
    before = initcheck.probe(model, batch, device="cpu", target="TanhNormal001")
    fixed = copy.deepcopy(model)
    initcheck.fix(fixed, generator=torch.Generator().manual_seed(0))
    after = initcheck.probe(fixed, batch, device="cpu")
    fig = plots.compare(before, after, labels=("N(0, 0.01)", "after initcheck.fix"),
                        title="TanhNormal001 on a batch of 256 N(0, 1) inputs")
    plots.save(fig, os.path.join(args.out, "probe_hist.png"), dpi=72)

if __name__ == "__main__":
    main()
