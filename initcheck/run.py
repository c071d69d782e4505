"""The command line's run: every target, every model in it, the report printed once at the end; returns
the exit code (0 clean, 1 findings at or above --fail-on, 2 a target that could not be checked). The
only other place that prints is cli.py, for the options and the docs."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .errors import InitcheckError, OutputError, UsageError
from .formats import Failure, Run, statistics, write
from .inputspec import example_inputs
from .options import Settings
from .progress import Bars, say
from .safe_write import resolve_output
from .sizes import NO_LIMIT

if TYPE_CHECKING:
    from .loader import Loaded
    from .report import Report


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
        fail(UsageError("--fix", "needs --fix-output FILE for the fixed state_dict (your source is never changed)"), verbose)
    if fix_output and not do_fix:
        fail(UsageError("--fix-output", "is only used with --fix"), verbose)
    if settings.data_driven and not do_fix:
        fail(UsageError("--data-driven", "is only used with --fix (it scales the weights the fix writes)"), verbose)
    if fix_output:
        try:  # early, before any work; checked again, atomically, when the file is committed
            resolve_output(fix_output, settings.force)
        except OutputError as e:
            fail(e, verbose)
    if do_fix and len(targets) != 1:
        fail(UsageError("--fix", "takes exactly one target (one --fix-output file)"), verbose)
    if settings.device == "cuda" and not torch.cuda.is_available():
        fail(UsageError("--device cuda", "no CUDA device is available here; use --device auto or cpu"), verbose)
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
            report_error(error, verbose)
            failures.append(Failure(error.target, f"{error.detail} ({error.hint})" if error.hint else error.detail))
            exit_code = 2
        for name, why in result.skipped if result.loaded else ():  # else the nothing-to-check line lists them
            if not settings.quiet:
                click.echo(f"initcheck: {name}: skipped: {why}", err=True)
        if (empty := nothing_to_check(target, [result])) is not None:
            report_error(empty, verbose)
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
                    inputs = example_inputs(settings.inputs, settings.inputs_hook, settings.input_dtype, loaded.model,
                                            settings.max_memory)
                    report = _run_one(loaded, inputs, settings, do_fix, settings.data_driven, fix_output,
                                      settings.probe, settings.device, settings.seed)
                if notes := tuple(dict.fromkeys(build_notes + _warning_notes(caught))):
                    report = replace(report, notes=report.notes + notes)
            except InitcheckError as e:
                report_error(e, verbose)
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
                    report_error(e, verbose)
                    exit_code = 2
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
        plots.histogram_plot(report, path, title=loaded.target)  # the probe's own counts: no second forward
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


def _write_report(path: str, text: str) -> None:
    """--output-file: replaced whole or not at all (safe_write: a temporary file beside it, renamed
    over it; nothing half written on Ctrl-C). A name that is not a regular file (/dev/stdout, a FIFO
    a reader waits on) is written directly: it has nothing to lose."""
    from .safe_write import write_file

    try:
        if os.path.exists(path) and not os.path.isfile(path):
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            write_file(path, lambda f: f.write(text.encode("utf-8")), force=True)
    except OSError as e:
        fail(UsageError(path, f"cannot write the report: {e.strerror}"), False)
    except InitcheckError as e:
        fail(e, False)


def _print(settings: Settings, run: Run) -> None:
    text = statistics.write(run) if settings.statistics else write(settings.output_format, run)
    if settings.output_file:
        _write_report(settings.output_file, text)
        return
    click.echo(text, nl=False, color=run.color or None)


def _run_one(loaded: Loaded, inputs: Any, settings: Settings, do_fix: bool, data_driven: bool, fix_output: str | None,
             do_probe: bool, device: str, seed: int) -> Report:
    import torch

    from .api import analyze, diagnose
    from .fix import fix
    from .memory import Activity, guard
    from .probe import probe
    from .safe_write import save

    kw: dict[str, Any] = dict(selection=settings.selection, thresholds=settings.thresholds, sources=loaded.sources,
                              mode=settings.mode)
    model = loaded.model
    if do_fix:
        if data_driven or inputs is not None:  # before the analysis, whose recorded trace may run the forward
            guard(model, inputs, activity=Activity.FIX, max_memory=settings.max_memory, device=device, target=loaded.target)
        first = analyze(model, inputs, target=loaded.target, **kw)  # traced once: fix reuses it
        click.echo(f"{loaded.target}: before the fix: {_summary(first.report)}", err=True)
        generator = torch.Generator().manual_seed(seed)
        say(f"fixing {loaded.target} ...")
        bars = Bars(sys.stderr)
        try:
            fixed = fix(model, inputs, device=device, generator=generator, data_driven=data_driven or None,
                        progress=bars, target=loaded.target, selection=settings.selection, analysis=first,
                        max_memory=NO_LIMIT)  # guarded above
        finally:
            bars.close()
        assert fix_output is not None  # checked before any work
        fix_output = save(model.state_dict(), fix_output, force=settings.force)  # a symlink's target when forced
        if fixed.fix is not None and fixed.fix.draw.reason:
            click.echo(f"{loaded.target}: {fixed.fix.draw.reason}", err=True)
        click.echo(f"{loaded.target}: wrote the fixed state_dict to {fix_output} ({_fix_summary(fixed)}); "
                   f"load it with model.load_state_dict(torch.load({fix_output!r}))", err=True)
    if do_probe:
        say(f"probing {loaded.target} on {device} ...")
        return probe(model, inputs, device=device, target=loaded.target, max_memory=settings.max_memory, **kw)
    if do_fix:
        return fixed  # the report after the fix, on the same trace
    return diagnose(model, inputs, target=loaded.target, **kw)


def _summary(report: Report) -> str:
    from .findings import summary

    return summary(report.findings)


def _fix_summary(report: Report) -> str:
    result = report.fix
    n = 0 if result is None else len(result.reinitialized)
    text = f"{n} weight{'s' if n != 1 else ''} reinitialized"
    if result is not None and result.queries_scaled:
        q = len(result.queries_scaled)
        text += f", {q} attention quer{'ies' if q != 1 else 'y'} scaled down to unsaturate the softmax"
    dd = None if result is None else result.data_driven
    if dd:
        text += (f", {len(dd.layers)} layers scaled in {dd.forward_passes} forward pass{'es' if dd.forward_passes != 1 else ''}, "
                 f"worst |std/target - 1| {dd.worst_rel_error:.2g}")
    return text


def report_error(e: InitcheckError, verbose: bool) -> None:
    line = e.line()  # an error about initcheck itself (a missing extra) already names it
    click.echo(line if line.startswith("initcheck: ") else f"initcheck: {line}", err=True)
    if verbose:
        traceback.print_exception(e)


def fail(e: InitcheckError, verbose: bool) -> NoReturn:
    report_error(e, verbose)
    sys.exit(2)
