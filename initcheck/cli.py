"""The command line: the only place that prints. Exit codes: 0 clean, 1 findings at or above
--fail-on, 2 a target or option that cannot be used.

torch is imported only once a model is checked, so --help, --version, `initcheck rule` for the
docs of a code and option errors answer at once.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.core import ParameterSource

from . import __version__, startup
from . import options as options_mod
from .configfile import load_config
from .errors import InitcheckError, OutputError, UsageError
from .findings import RULES, Finding
from .formats import Failure, Run, statistics, write
from .inputspec import DTYPE_NAMES, example_inputs
from .options import COLORS, DEVICES, FORMATS, Settings
from .progress import Bars, say
from .safe_write import Interrupted, resolve_output

if TYPE_CHECKING:
    from .loader import Loaded
    from .report import Report

_CODES = "Codes or prefixes; repeat the flag or separate with commas."

# click parameter -> Settings field, for the options that Settings holds
_FIELDS = {"targets": "targets", "output_format": "output_format", "legacy_format": "output_format",
           "output_file": "output_file", "fail_on": "fail_on", "select": "select", "ignore": "ignore",
           "extend_select": "extend_select", "extend_ignore": "extend_ignore", "input_shape": "input_shape",
           "inputs": "inputs", "inputs_hook": "inputs_hook", "input_dtype": "input_dtype", "do_fix": "fix",
           "data_driven": "data_driven", "fix_output": "fix_output", "force": "force", "do_probe": "probe",
           "device": "device", "seed": "seed", "exclude": "exclude", "show_suppressed": "show_suppressed",
           "statistics": "statistics", "quiet": "quiet", "color": "color"}


def interruptible(func: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C (or SIGTERM during a write) anywhere in `func`: one line, no traceback, exit 130 (143)."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        startup.release()
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt as e:
            click.echo("initcheck: interrupted", err=True)
            sys.exit(e.exit_code if isinstance(e, Interrupted) else 130)

    return run


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("targets", nargs=-1)
@click.option("--output-format", metavar="|".join(FORMATS), default=None, help="Report format.  [default: full]")
@click.option("--format", "legacy_format", type=click.Choice(["table", "json"]), default=None,
              help="Alias of --output-format (table is full).")
@click.option("--output-file", metavar="FILE", default=None, help="Write the report here instead of stdout.")
@click.option("--fail-on", metavar="error|warning|info|never", default=None,
              help="Exit 1 when a finding at or above this severity exists.  [default: error]")
@click.option("--select", multiple=True, help=f"Only these rules. {_CODES}")
@click.option("--ignore", multiple=True, help=f"Skip these rules. {_CODES}")
@click.option("--extend-select", multiple=True, help=f"Add to the selected rules (of the config too). {_CODES}")
@click.option("--extend-ignore", multiple=True, help=f"Add to the ignored rules (of the config too). {_CODES}")
@click.option("--input-shape", metavar="SHAPE", default=None, help="Example input shape for models fx cannot trace, e.g. 2,3,32,32.")
@click.option("--input", "inputs", multiple=True, metavar="[NAME=]SHAPE[:DTYPE]",
              help="One example input a flag, in the forward's order, or by keyword (tokens=1,16:int64).")
@click.option("--inputs", "inputs_hook", metavar="FILE.py:FUNCTION", default=None,
              help="A function that returns the example inputs (a tensor, a tuple or a dict).")
@click.option("--input-dtype", metavar="|".join(DTYPE_NAMES), default=None, help="Example input dtype (int64 for token ids).  [default: float32]")
@click.option("--fix", "do_fix", is_flag=True, help="Reinitialize the flagged weights (data-driven with --input-shape or --data-driven) and write the state_dict to --fix-output.")
@click.option("--data-driven", is_flag=True, help="With --fix: also scale every layer to its target in one forward pass on a synthetic batch.")
@click.option("--fix-output", metavar="FILE", default=None, help="Where --fix writes the fixed state_dict (torch.save); your source is never touched.")
@click.option("-o", "--output", "output", metavar="FILE", default=None, help="Deprecated: use --fix-output.")
@click.option("--force", is_flag=True, help="Let --fix-output overwrite an existing file.")
@click.option("--probe", "do_probe", is_flag=True, help="Also run a real forward and backward pass and show measured statistics.")
@click.option("--device", metavar="|".join(DEVICES), default=None, help="Where --probe and --fix run (auto: CUDA when available).  [default: auto]")
@click.option("--seed", type=int, default=None, help="Seed of torch's RNG while the models are built, and of the generator --fix draws new weights from.  [default: 0]")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Skip targets matching this fnmatch pattern (repeatable).")
@click.option("--show-suppressed", is_flag=True, help="Also list the findings that `# initcheck: ignore[...]` comments suppressed.")
@click.option("--statistics", is_flag=True, help="Print only a count per code.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the findings.")
@click.option("--color", metavar="|".join(COLORS), default=None, help="Color on a terminal (auto respects NO_COLOR).  [default: auto]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A pyproject.toml with [tool.initcheck], or an initcheck.toml (found upwards from here by default).")
@click.option("--show-settings", is_flag=True, help="Print the resolved settings and where each came from, and exit.")
@click.option("--explain", metavar="CODE", default=None, help="Print a rule's documentation and exit (also: initcheck rule CODE).")
@click.option("--plot", "plot", metavar="FILE", default=None,
              help="Draw the predicted signal per layer (with --probe: measured histograms per layer) to FILE (.png, .svg, .pdf; needs initcheck[plot]).")
@click.option("--list-rules", is_flag=True, help="List the finding codes and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, "--version", prog_name="initcheck")
@click.pass_context
@interruptible
def main(ctx: click.Context, /, targets: tuple[str, ...], output: str | None, config_path: str | None,
         show_settings: bool, explain: str | None, list_rules: bool, verbose: bool, plot: str | None = None,
         **_: Any) -> None:
    """Check the weight initialization of PyTorch models, before any training.

    TARGETS are path/to/model.py:Name, package.module:Name or path/to/model.py (every nn.Module
    subclass in the file that builds with no arguments). Name may be an nn.Module subclass, a
    function returning a module, or a module instance. With no TARGETS, the targets come from
    [tool.initcheck] in pyproject.toml (or initcheck.toml). `initcheck rule CODE` prints a rule's docs.
    """
    if explain or targets[:1] == ("rule",):
        _explain([explain] if explain else list(targets[1:]), verbose)
        return
    if list_rules:
        options_mod.load_rules()
        for code, r in sorted(RULES.items()):
            click.echo(f"{code}  {r.severity.value:<7}  {r.name}: {r.summary}")
        return
    given = _given(ctx)
    if output is not None:
        click.echo("initcheck: -o/--output is deprecated and will be removed in 0.3; use --fix-output", err=True)
        given.setdefault("fix_output", output)
    try:
        settings = options_mod.settings_from(load_config(config_path), given)
    except InitcheckError as e:
        _fail(e, verbose)
    if show_settings:
        click.echo(options_mod.describe(settings))
        return
    if plot is not None:
        from .plots import check_path

        try:
            check_path(plot)
        except InitcheckError as e:
            _fail(e, verbose)
    sys.exit(check(settings, verbose, plot))


def _given(ctx: click.Context) -> dict[str, Any]:
    """The options the user typed (not click's defaults), under their Settings names."""
    out: dict[str, Any] = {}
    for param, name in _FIELDS.items():
        if ctx.get_parameter_source(param) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            out[name] = ctx.params[param]
    return out


def check(settings: Settings, verbose: bool = False, plot: str | None = None) -> int:
    """Run every target and print the report; returns the exit code. Python warnings raised on the
    way (torch's own at import, the model's) never reach stderr raw: the model's become notes in its
    report, torch's internals are dropped (--verbose prints them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _check(settings, verbose, plot)
    if verbose:
        for w in caught:
            click.echo(f"initcheck: python warning: {w.category.__name__}: {w.message} ({w.filename}:{w.lineno})", err=True)
    return code


def _warning_notes(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    """The warnings the user's code raised while it was checked (torch's internals left out), once each."""
    import torch

    internal = (os.path.dirname(torch.__file__), os.path.dirname(__file__))
    seen: dict[str, None] = {}
    for w in caught:
        if not w.filename.startswith(internal):
            seen.setdefault(f"warning at {w.filename}:{w.lineno}: {w.category.__name__}: {str(w.message).splitlines()[0][:200]}")
    return tuple(seen)[:5]


def _check(settings: Settings, verbose: bool, plot: str | None) -> int:
    import torch

    fix_output, do_fix = settings.fix_output, settings.fix
    targets = settings.targets
    if do_fix and not fix_output:
        _fail(UsageError("--fix", "needs --fix-output FILE for the fixed state_dict (your source is never changed)"), verbose)
    if fix_output and not do_fix:
        _fail(UsageError("--fix-output", "is only used with --fix"), verbose)
    if settings.data_driven and not do_fix:
        _fail(UsageError("--data-driven", "is only used with --fix (it scales the weights the fix writes)"), verbose)
    if fix_output:
        try:  # early, before any work; checked again, atomically, when the file is committed
            resolve_output(fix_output, settings.force)
        except OutputError as e:
            _fail(e, verbose)
    if do_fix and len(targets) != 1:
        _fail(UsageError("--fix", "takes exactly one target (one --fix-output file)"), verbose)
    if settings.device == "cuda" and not torch.cuda.is_available():
        _fail(UsageError("--device cuda", "no CUDA device is available here; use --device auto or cpu"), verbose)
    if not targets:
        click.echo("initcheck: no targets: name one (initcheck model.py:Net) or list them in [tool.initcheck] targets", err=True)
        sys.exit(2)

    from .loader import load_all, nothing_to_check, stdout_to_stderr

    reports: list[Report] = []
    failures: list[Failure] = []
    exit_code = 0
    progress = len(targets) > 1 and sys.stderr.isatty()
    for target in targets:
        if _excluded(target, settings.exclude):
            continue
        torch.manual_seed(settings.seed)  # the models' own random init: the same report on every run
        with warnings.catch_warnings(record=True) as built:
            warnings.simplefilter("always")
            result = load_all(target, exclude=settings.exclude)
        build_notes = _warning_notes(built)
        for error in result.failed:  # one failing class never hides the others
            _report_error(error, verbose)
            failures.append(Failure(error.target, f"{error.detail} ({error.hint})" if error.hint else error.detail))
            exit_code = 2
        for name, why in result.skipped if result.loaded else ():  # else the nothing-to-check line lists them
            if not settings.quiet:
                click.echo(f"initcheck: {name}: skipped: {why}", err=True)
        if (empty := nothing_to_check(target, [result])) is not None:
            _report_error(empty, verbose)
            failures.append(Failure(target, empty.detail))
            exit_code = 2
            continue
        for loaded in result.loaded:
            if _excluded(loaded.target, settings.exclude):
                continue
            if progress:
                click.echo(f"initcheck: checking {loaded.target} ...", err=True)
            try:
                with stdout_to_stderr(), warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")  # the model's own prints never reach the report on stdout
                    inputs = example_inputs(settings.inputs, settings.inputs_hook, settings.input_dtype, loaded.model)
                    report = _run_one(loaded, inputs, settings, do_fix, settings.data_driven, fix_output,
                                      settings.probe, settings.device, settings.seed)
                if notes := tuple(dict.fromkeys(build_notes + _warning_notes(caught))):
                    report = replace(report, notes=report.notes + notes)
            except InitcheckError as e:
                _report_error(e, verbose)
                failures.append(Failure(loaded.target, f"{e.detail} ({e.hint})" if e.hint else e.detail))
                exit_code = 2
                continue
            except Exception as e:  # a bug of ours: still one line, and the traceback on request
                line = f"internal error {type(e).__name__}: {e} (please report it; --verbose shows the traceback)"
                click.echo(f"initcheck: {loaded.target}: {line}", err=True)
                if verbose:
                    traceback.print_exc()
                failures.append(Failure(loaded.target, line))
                exit_code = 2
                continue
            if plot is not None:
                try:
                    _draw(plot, loaded, inputs, report, settings.probe)
                except InitcheckError as e:
                    _report_error(e, verbose)
                    exit_code = 2
            if settings.show_suppressed and report.suppressed:
                report = replace(report, extra={**report.extra, "suppressed": [
                    _suppressed_dict(f, reason) for f, reason in report.suppressed]})
            reports.append(report)
            if report.fails(settings.fail_on):
                exit_code = max(exit_code, 1)
    _print(settings, Run(tuple(reports), tuple(failures), str(settings.fail_on), _color(settings), settings.quiet,
                         settings.show_suppressed))
    return exit_code


def _draw(path: str, loaded: Loaded, inputs: Any, report: Report, probed: bool) -> None:
    """--plot: the measured histograms with --probe, else the predicted signal; one file a run
    (several targets overwrite it: name one target)."""
    from . import plots

    if probed:
        plots.probe_histograms(loaded.model, inputs, path, title=loaded.target)
    else:
        plots.signal_plot(report, path, title=loaded.target)
    say(f"drew {path}")


def _excluded(target: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(target, p) or fnmatchcase(target.split(":", 1)[0], p) for p in patterns)


def _color(settings: Settings) -> bool:
    """Color only on a terminal, never with NO_COLOR set (no-color.org), unless --color always."""
    if settings.color != "auto":
        return settings.color == "always"
    return not settings.output_file and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _print(settings: Settings, run: Run) -> None:
    text = statistics.write(run) if settings.statistics else write(settings.output_format, run)
    if settings.output_file:
        try:
            with open(settings.output_file, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            _fail(UsageError(settings.output_file, f"cannot write the report: {e.strerror}"), False)
        return
    click.echo(text, nl=False, color=run.color or None)


def _run_one(loaded: Loaded, inputs: Any, settings: Settings, do_fix: bool, data_driven: bool, fix_output: str | None,
             do_probe: bool, device: str, seed: int) -> Report:
    import torch

    from .api import diagnose
    from .fix import fix
    from .probe import probe
    from .safe_write import save

    kw: dict[str, Any] = dict(selection=settings.selection, thresholds=settings.thresholds, sources=loaded.sources)
    model = loaded.model
    if do_fix:
        before = diagnose(model, inputs, target=loaded.target, **kw)
        click.echo(f"{loaded.target}: before the fix: {_summary(before)}", err=True)
        generator = torch.Generator().manual_seed(seed)
        say(f"fixing {loaded.target} ...")
        bars = Bars(sys.stderr)
        try:
            fixed = fix(model, inputs, device=device, generator=generator, data_driven=data_driven or None,
                        progress=bars, target=loaded.target, selection=settings.selection)
        finally:
            bars.close()
        assert fix_output is not None  # checked before any work
        fix_output = save(model.state_dict(), fix_output, force=settings.force)  # a symlink's target when forced
        draw = fixed.extra.get("draw") or {}
        if draw.get("reason"):
            click.echo(f"{loaded.target}: {draw['reason']}", err=True)
        click.echo(f"{loaded.target}: wrote the fixed state_dict to {fix_output} ({_fix_summary(fixed)}); "
                   f"load it with model.load_state_dict(torch.load({fix_output!r}))", err=True)
    if do_probe:
        say(f"probing {loaded.target} on {device} ...")
        return probe(model, inputs, device=device, target=loaded.target, **kw)
    return diagnose(model, inputs, target=loaded.target, **kw)


def _suppressed_dict(f: Finding, reason: str) -> dict[str, Any]:
    return {"code": f.code, "severity": f.severity.value, "layer": f.layer, "message": f.message,
            "source": f.source, "reason": reason}


def _explain(codes: list[str], verbose: bool) -> None:
    from .docs import load, rule_page

    load()
    if len(codes) != 1 or codes[0].upper() not in RULES:
        shown = " ".join(codes) or "(none)"
        _fail(UsageError(f"rule {shown}", f"name one code; valid codes: {', '.join(sorted(RULES))}"), verbose)
    click.echo(rule_page(RULES[codes[0].upper()]), nl=False)


def _summary(report: Report) -> str:
    from .findings import summary

    return summary(report.findings)


def _fix_summary(report: Report) -> str:
    n = len(report.extra.get("reinitialized", []))
    text = f"{n} weight{'s' if n != 1 else ''} reinitialized"
    dd = report.extra.get("data_driven")
    if dd:
        text += (f", {len(dd['layers'])} layers scaled in {dd['forward_passes']} forward passes, "
                 f"worst |std/target - 1| {dd['worst_rel_error']:.2g}")
    return text


def _report_error(e: InitcheckError, verbose: bool) -> None:
    click.echo(f"initcheck: {e.line()}", err=True)
    if verbose:
        traceback.print_exception(e)


def _fail(e: InitcheckError, verbose: bool) -> NoReturn:
    _report_error(e, verbose)
    sys.exit(2)
