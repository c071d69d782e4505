"""What diagnose() costs against its floor, and what the CLI costs against importing torch.

Floor: tracing the model (the same tracer diagnose uses) plus one read of every weight (a chunked
sum). Times are CPU seconds (time.process_time, one torch thread), each call after gc.collect().
Per model case, one fresh process per measured call: the peak memory of diagnose (or the floor) on
its second call (the first imports and builds lazy tables; Linux's VmHWM is reset between them): the
process's peak RSS during the call less its RSS before it, against the model's size; then floor and diagnose
interleaved --runs N times (default 3): the medians of the times and of the per-run ratios (a
shared machine's slow stretches hit both sides of a ratio alike). Run: python benchmarks/diagnose_cost.py
[--cases gpt2,bert_base,gpt2_large,llama_7b_meta,llama_70b_meta] [--runs N] [--no-cli]

`--depths 10,30,100,300,1000,3000`: instead, a ReLU MLP (width 64) at each depth, in this process:
floor, diagnose and static fix() interleaved --runs N times (default 3), medians as above, and the
depth exponent of each fitted on log-log between the two deepest depths and over all of them.
`--stages` (with --depths): also diagnose's CPU time per stage (medians), to see where it goes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from tabulate import tabulate

CASES = {
    "GPT-2 small (124M, fp32, CPU)": "gpt2",
    "BERT base (110M, fp32, CPU)": "bert_base",
    "GPT-2 large size (774M, fp32, CPU)": "gpt2_large",
    "LLaMA 7B config (meta device)": "llama_7b_meta",
    "LLaMA 70B config (meta device)": "llama_70b_meta",
}

CHILD = r'''
import gc, json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import torch, transformers as T
torch.set_num_threads(1)
from initcheck import diagnose
from initcheck.trace import trace, weight_params
from initcheck.inputs import candidates
case, what, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
if case == "gpt2":
    model = T.GPT2LMHeadModel(T.GPT2Config())
elif case == "bert_base":
    model = T.BertForMaskedLM(T.BertConfig())
elif case == "gpt2_large":
    model = T.GPT2LMHeadModel(T.GPT2Config(n_embd=1280, n_layer=36, n_head=20))
elif case == "llama_7b_meta":
    with torch.device("meta"):
        model = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                                 num_attention_heads=32, vocab_size=32000))
else:
    with torch.device("meta"):
        model = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                                 num_attention_heads=64, num_key_value_heads=8, vocab_size=32000))
size = sum(p.numel() * p.element_size() for p in model.parameters())
def floor():
    trace(model, None, None, build_inputs=lambda: list(candidates(model)))
    with torch.no_grad():
        for p in weight_params(model).values():
            if not p.is_meta:
                for chunk in p.detach().reshape(-1).split(1 << 22):
                    chunk.sum()
calls = {"diagnose": lambda: diagnose(model), "floor": floor}
def timed(fn):
    gc.collect()
    t0 = time.process_time()
    fn()
    return time.process_time() - t0
calls[what]()  # imports, lazily built tables, first kernels: neither timed nor counted as memory
gc.collect()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # Linux: the peak RSS (VmHWM) starts again from the RSS now
before = status("VmRSS")
calls[what]()
peak = status("VmHWM")
fs, ds = [], []
for _ in range(runs):
    fs.append(timed(floor))
    ds.append(timed(calls["diagnose"]))
print(json.dumps({"floor": statistics.median(fs), "diagnose": statistics.median(ds),
                  "ratio": statistics.median(d / f for d, f in zip(ds, fs)), "size": size,
                  "peak_extra": max(peak - before, 0), "params": sum(p.numel() for p in model.parameters())}))
'''


def measure(case: str, first: str, runs: int = 3) -> dict:
    """One fresh process: the peak memory of `first` (diagnose or the floor) called first, then
    floor and diagnose interleaved `runs` times."""
    out = subprocess.run([sys.executable, "-c", CHILD, case, first, str(runs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wall(cmd: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def depth_sweep(depths: list[int], runs: int = 3, stages: bool = False) -> None:
    import gc
    import math

    import torch
    from torch import nn

    torch.set_num_threads(1)
    per_stage = _stage_timer() if stages else None

    from initcheck import diagnose, fix
    from initcheck.inputs import candidates
    from initcheck.trace import trace, weight_params

    def mlp(depth: int) -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.Linear(64, 64), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(64, 10))

    def floor(model: nn.Module) -> None:
        trace(model, None, None, build_inputs=lambda: list(candidates(model)))
        with torch.no_grad():
            for p in weight_params(model).values():
                p.detach().reshape(-1).sum()

    def interleaved(depth: int) -> tuple[float, float, float, float, float]:
        """floor, diagnose and fix run back to back on the same model, `runs` times: (median floor,
        median diagnose, median fix, median of the per-run diagnose/floor and fix/diagnose ratios).
        On a shared machine a slow stretch then hits both sides of a ratio alike."""
        fs, ds, xs = [], [], []
        for _ in range(runs):
            for fn, out in ((floor, fs), (diagnose, ds), (lambda m: fix(m, generator=torch.Generator().manual_seed(0)), xs)):
                torch.manual_seed(0)
                model = mlp(depth)
                gc.collect()
                t0 = time.process_time()
                fn(model)
                out.append(time.process_time() - t0)
        return (statistics.median(fs), statistics.median(ds), statistics.median(xs),
                statistics.median(d / f for d, f in zip(ds, fs)), statistics.median(x / d for x, d in zip(xs, ds)))

    # one call of each first: imports, lazily built tables and torch's first kernels are not the model's cost
    warm = mlp(3)
    floor(warm), diagnose(warm), fix(warm, generator=torch.Generator().manual_seed(0))
    rows, series = [], {"floor": [], "diagnose": [], "fix": []}
    for depth in depths:
        if per_stage is not None:
            per_stage.clear()
        f, d, x, d_over_f, x_over_d = interleaved(depth)
        if per_stage is not None:  # diagnose's and fix's calls together, per call
            print(f"  stages at depth {depth} (CPU s per call, diagnose and fix's analysis): " + ", ".join(
                f"{k} {statistics.median(v):.3f}" for k, v in per_stage.items()), flush=True)
        for key, v in (("floor", f), ("diagnose", d), ("fix", x)):
            series[key].append(v)
        rows.append([depth, f"{f:.3f}", f"{d:.3f}", f"{d_over_f:.2f}x", f"{x:.3f}", f"{x_over_d:.2f}x"])
        print(*rows[-1], flush=True)

    def slope(ys: list[float], lo: int = 0) -> float:
        xs = [math.log(v) for v in depths[lo:]]
        ls = [math.log(v) for v in ys[lo:]]
        mx, my = statistics.fmean(xs), statistics.fmean(ls)
        return sum((a - mx) * (b - my) for a, b in zip(xs, ls)) / sum((a - mx) ** 2 for a in xs)

    print(tabulate(rows, headers=["depth", "floor s", "diagnose s", "diagnose / floor", "fix (static) s", "fix / diagnose"],
                   disable_numparse=True))
    if len(depths) < 2:
        return  # no exponent to fit from one depth
    last = max(len(depths) - 2, 0)
    for key, ys in series.items():
        print(f"{key}: time ~ depth^{slope(ys):.2f} over {depths[0]}..{depths[-1]}, "
              f"depth^{slope(ys, last):.2f} over {depths[last]}..{depths[-1]}")


def _stage_timer() -> dict[str, list[float]]:
    """Wrap the stages of initcheck.api with CPU timers: stage -> the CPU seconds of each call."""
    from initcheck import api

    times: dict[str, list[float]] = {}

    def wrap(owner: object, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*a, **k):
            t0 = time.process_time()
            try:
                return real(*a, **k)
            finally:
                times.setdefault(label, []).append(time.process_time() - t0)
        setattr(owner, name, timed)

    for owner, name, label in ((api, "trace", "trace"), (api, "index_graph", "index"), (api.facts_mod, "collect", "facts"),
                               (api.conventions, "apply", "conventions"), (api, "classify", "params"),
                               (api, "_context", "signal"), (api.rules_mod, "run", "rules"),
                               (api.rows, "layer_rows", "layer rows"), (api.rows, "param_rows", "param rows")):
        wrap(owner, name, label)
    return times


def main():
    if "--depths" in sys.argv:
        runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
        depth_sweep([int(d) for d in sys.argv[sys.argv.index("--depths") + 1].split(",")], runs, "--stages" in sys.argv)
        return
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
    only = sys.argv[sys.argv.index("--cases") + 1].split(",") if "--cases" in sys.argv else list(CASES.values())
    rows = []
    for label, case in CASES.items():
        if case not in only:
            continue
        d, f = measure(case, "diagnose", runs), measure(case, "floor", runs)
        size_gb = d["size"] / 1e9
        rows.append([label, f"{d['params'] / 1e9:.2f}B", f"{d['diagnose']:.3f}", f"{d['floor']:.3f}",
                     f"{d['ratio']:.2f}x", f"{size_gb:.2f}", f"{d['peak_extra'] / 1e9:.3f}", f"{f['peak_extra'] / 1e9:.3f}",
                     f"{d['peak_extra'] / max(d['size'], 1):.1%}" if size_gb > 0 else "-"])
    print(tabulate(rows, headers=["model", "params", "diagnose s", "floor s", "diagnose / floor", "model GB",
                                  "peak extra GB", "floor's peak extra GB", "peak extra / model"],
                   disable_numparse=True))
    if "--no-cli" in sys.argv:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seeds = os.path.join(root, "examples", "seeds.py")
    torch_s = wall([sys.executable, "-c", "import torch"])
    version_s = wall([sys.executable, "-m", "initcheck", "--version"])
    check_s = wall([sys.executable, "-m", "initcheck", f"{seeds}:He"])
    print()
    print(tabulate([["python -c 'import torch'", f"{torch_s:.2f}", "1.00x"],
                    ["initcheck --version", f"{version_s:.2f}", f"{version_s / torch_s:.2f}x"],
                    ["initcheck examples/seeds.py:He", f"{check_s:.2f}", f"{check_s / torch_s:.2f}x"]],
                   headers=["command (median of 5)", "seconds", "vs import torch"], disable_numparse=True))


if __name__ == "__main__":
    main()
