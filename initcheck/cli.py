"""The command line: the only place that prints. Exit codes: 0 clean, 1 findings at or above
--fail-on, 2 a target or option that cannot be used."""

from __future__ import annotations

import functools
import sys
import traceback

import click
import torch

from . import __version__, startup
from . import config as config_mod
from .api import diagnose
from .errors import ConfigError, InitcheckError, OutputError, UsageError
from .findings import RULES, SEVERITY_WORDS, summary
from .fix import fix
from .inputs import from_shape
from .loader import load
from .probe import probe
from .report import format_text, to_json
from .safe_write import Interrupted, resolve_output, save

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64, "int32": torch.int32, "long": torch.int64, "float": torch.float32}


class ShapeType(click.ParamType):
    name = "shape"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            shape = tuple(int(v) for v in str(value).replace("x", ",").split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a shape: write it as 2,3,32,32", param, ctx)
        if not shape or any(s <= 0 for s in shape):
            self.fail(f"{value!r} is not a shape: every size must be a positive integer", param, ctx)
        return shape


def _codes(value: str | None) -> tuple[str, ...]:
    return tuple(c.strip().upper() for c in (value or "").split(",") if c.strip())


def interruptible(func):
    """Ctrl-C (or SIGTERM during a write) anywhere in `func`: one line, no traceback, exit 130 (143)."""

    @functools.wraps(func)
    def run(*args, **kwargs):
        startup.release()
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt as e:
            click.echo("initcheck: interrupted", err=True)
            sys.exit(e.exit_code if isinstance(e, Interrupted) else 130)

    return run


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("targets", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format.")
@click.option("--fail-on", type=click.Choice([*SEVERITY_WORDS, "never"]), default=None, help="Exit 1 when a finding at or above this severity exists.  [default: error]")
@click.option("--select", default=None, help="Only these codes or prefixes, comma-separated (IC1,IC203).")
@click.option("--ignore", default=None, help="Skip these codes or prefixes, comma-separated.")
@click.option("--input-shape", type=ShapeType(), default=None, help="Example input shape for models fx cannot trace, e.g. 2,3,32,32.")
@click.option("--input-dtype", type=click.Choice(sorted(DTYPES)), default=None, help="Example input dtype (int64 for token ids).  [default: float32]")
@click.option("--fix", "do_fix", is_flag=True, help="Reinitialize the flagged weights (data-driven with --input-shape or --data-driven) and write the state_dict to --output.")
@click.option("--data-driven", is_flag=True, help="With --fix: also scale every layer to its target in one forward pass on a synthetic batch.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Where --fix writes the fixed state_dict (torch.save); your source is never touched.")
@click.option("--force", is_flag=True, help="Let --output overwrite an existing file.")
@click.option("--probe", "do_probe", is_flag=True, help="Also run a real forward and backward pass and show measured statistics.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="Where --probe and --fix run (auto: CUDA when available).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of torch's RNG while the models are built, and of the generator --fix draws new weights from.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="A pyproject.toml with [tool.initcheck] (found upwards from here by default).")
@click.option("--list-rules", is_flag=True, help="List the finding codes and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, "--version", prog_name="initcheck")
@interruptible
def main(targets, fmt, fail_on, select, ignore, input_shape, input_dtype, do_fix, data_driven, output, force,
         do_probe, device, seed, config_path, list_rules, verbose):
    """Check the weight initialization of PyTorch models, before any training.

    TARGETS are path/to/model.py:Name, package.module:Name or path/to/model.py (every nn.Module
    subclass in the file that builds with no arguments). Name may be an nn.Module subclass, a
    function returning a module, or a module instance. With no TARGETS, the targets come from
    [tool.initcheck] in pyproject.toml.
    """
    if list_rules:
        for code, r in RULES.items():
            click.echo(f"{code}  {r.severity.value:<7}  {r.name}: {r.summary}")
        return
    try:
        cfg = config_mod.read(config_path) if config_path else (
            config_mod.read(found) if (found := config_mod.find()) else config_mod.Config())
    except ConfigError as e:
        _fail(e, verbose)
    targets = targets or cfg.targets
    if do_fix and not output:
        _fail(UsageError("--fix", "needs --output FILE for the fixed state_dict (your source is never changed)"), verbose)
    if output and not do_fix:
        _fail(UsageError("--output", "is only used with --fix"), verbose)
    if output:
        try:  # early, before any work; checked again, atomically, when the file is committed
            resolve_output(output, force)
        except OutputError as e:
            _fail(e, verbose)
    if do_fix and len(targets) != 1:
        _fail(UsageError("--fix", "takes exactly one target (one --output file)"), verbose)
    if device == "cuda" and not torch.cuda.is_available():
        _fail(UsageError("--device cuda", "no CUDA device is available here; use --device auto or cpu"), verbose)
    if not targets:
        click.echo("initcheck: no targets: name one (initcheck model.py:Net) or list them in [tool.initcheck] targets", err=True)
        sys.exit(2)
    fail_on = fail_on or cfg.fail_on or "error"
    if fail_on not in (*SEVERITY_WORDS, "never"):
        _fail(ConfigError(cfg.path or "config", f"fail-on must be one of {', '.join((*SEVERITY_WORDS, 'never'))}"), verbose)
    select_codes = _codes(select) or cfg.select
    ignore_codes = _codes(ignore) or cfg.ignore
    shape = input_shape or (ShapeType().convert(cfg.input_shape, None, None) if cfg.input_shape else None)
    dtype = DTYPES[input_dtype or cfg.input_dtype or "float32"]

    reports, exit_code = [], 0
    progress = len(targets) > 1 and sys.stderr.isatty()
    for target in targets:
        try:
            torch.manual_seed(seed)  # the models' own random init: the same report on every run
            for loaded in load(target):
                if progress:
                    click.echo(f"initcheck: checking {loaded.target} ...", err=True)
                inputs = from_shape(shape, dtype, loaded.model) if shape else None
                report = _run_one(loaded, inputs, select_codes, ignore_codes, cfg, do_fix, data_driven, output,
                                  do_probe, device, seed, force)
                reports.append(report)
                if fmt == "table":
                    click.echo(format_text(report))
                    click.echo("")
                if report.fails(fail_on):
                    exit_code = max(exit_code, 1)
        except InitcheckError as e:
            _report_error(e, verbose)
            exit_code = 2
        except Exception as e:  # a bug of ours: still one line, and the traceback on request
            click.echo(f"initcheck: {target}: internal error {type(e).__name__}: {e} (please report it; --verbose shows the traceback)", err=True)
            if verbose:
                traceback.print_exc()
            exit_code = 2
    if fmt == "json":
        click.echo(to_json(reports))
    sys.exit(exit_code)


def _run_one(loaded, inputs, select_codes, ignore_codes, cfg, do_fix, data_driven, output, do_probe, device, seed,
             force=False):
    kw = dict(select=select_codes, ignore=ignore_codes, per_layer_ignore=cfg.per_layer_ignores, sources=loaded.sources)
    model = loaded.model
    if do_fix:
        before = diagnose(model, inputs, target=loaded.target, **kw)
        click.echo(f"{loaded.target}: before the fix: {_summary(before)}", err=True)
        generator = torch.Generator().manual_seed(seed)
        _progress(f"fixing {loaded.target} ...")
        bars = Bars(sys.stderr)
        try:
            fixed = fix(model, inputs, device=device, generator=generator, data_driven=data_driven or None,
                        progress=bars, target=loaded.target)
        finally:
            bars.close()
        output = save(model.state_dict(), output, force=force)  # a symlink's target when forced
        click.echo(f"{loaded.target}: wrote the fixed state_dict to {output} ({_fix_summary(fixed)}); "
                   f"load it with model.load_state_dict(torch.load({output!r}))", err=True)
    if do_probe:
        _progress(f"probing {loaded.target} on {device} ...")
        return probe(model, inputs, device=device, target=loaded.target, **kw)
    return diagnose(model, inputs, target=loaded.target, **kw)


def _summary(report) -> str:
    return summary(report.findings)


def _fix_summary(report) -> str:
    n = len(report.extra.get("reinitialized", []))
    text = f"{n} weight{'s' if n != 1 else ''} reinitialized"
    dd = report.extra.get("data_driven")
    if dd:
        text += (f", {len(dd['layers'])} layers scaled in {dd['forward_passes']} forward passes, "
                 f"worst |std/target - 1| {dd['worst_rel_error']:.2g}")
    return text


class Bars:
    """fix()'s progress(stage, done, total) drawn as one bar per stage on a terminal; silent when
    the stream is not a terminal (CI logs, pipes, pre-commit)."""

    def __init__(self, stream):
        self.stream = stream
        self.enabled = stream.isatty()
        self.stage: str | None = None
        self.bar = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(length=max(total, 1), label=f"initcheck: {stage}", file=self.stream,
                                         show_pos=True, show_eta=False)
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
            self.stage = None


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        click.echo(f"initcheck: {message}", err=True)


def _report_error(e: InitcheckError, verbose: bool) -> None:
    click.echo(f"initcheck: {e.line()}", err=True)
    if verbose:
        traceback.print_exception(e)


def _fail(e: InitcheckError, verbose: bool):
    _report_error(e, verbose)
    sys.exit(2)
