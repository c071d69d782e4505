"""The command line: the only place that prints. Exit codes: 0 clean, 1 findings at or above
--fail-on, 2 a target or option that cannot be used.

torch is imported only once a model is checked, so --help, --version, `initcheck rule` for the
docs of a code and option errors answer at once.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from . import __version__
from . import options as options_mod
from .configfile import load_config
from .errors import InitcheckError, UsageError
from .findings import RULES
from .inputspec import DTYPE_NAMES
from .options import COLORS, DEVICES, FORMATS
from .run import check, fail
from .safe_write import Interrupted

if TYPE_CHECKING:
    pass

_CODES = "Codes or prefixes; repeat the flag or separate with commas."

# click parameter -> Settings field, for the options that Settings holds
_FIELDS = {"targets": "targets", "output_format": "output_format", "legacy_format": "output_format",
           "output_file": "output_file", "fail_on": "fail_on", "select": "select", "ignore": "ignore",
           "extend_select": "extend_select", "extend_ignore": "extend_ignore", "input_shape": "input_shape",
           "inputs": "inputs", "inputs_hook": "inputs_hook", "input_dtype": "input_dtype", "do_fix": "fix",
           "data_driven": "data_driven", "fix_output": "fix_output", "force": "force", "do_probe": "probe",
           "device": "device", "mode": "mode", "max_memory": "max_memory", "seed": "seed", "exclude": "exclude", "show_suppressed": "show_suppressed",
           "statistics": "statistics", "quiet": "quiet", "color": "color"}


def interruptible(func: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C (or SIGTERM during a write) anywhere in `func`: one line, no traceback, exit 130 (143).
    Run as the command, startup.py's handler ends the process itself (and safe_write swaps it for a
    raising one while a file is written); this catches the KeyboardInterrupt of the other ways in
    (click's test runner, an embedding) and safe_write's `Interrupted`."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                # torch's own warnings while it imports ("Failed to initialize NumPy" on a bare
                # install), whichever step imports it first: not the user's business. run.check
                # records the warnings of the run itself (the model's become notes).
                warnings.filterwarnings("ignore", module=r"torch(\.|$)")
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
@click.option("--mode", metavar="train|eval", default=None,
              help="The forward judged: train (BatchNorm on each batch's statistics, dropout on) or eval (running statistics).  [default: train]")
@click.option("--max-memory", metavar="SIZE", default=None,
              help="Refuse a --probe or data-driven --fix estimated (on the meta device) to need more: 4G, 512M, bytes, or none.  [default: half the available memory]")
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
        fail(e, verbose)
    if show_settings:
        click.echo(options_mod.describe(settings))
        return
    if plot is not None:
        from .errors import require
        from .plots import check_path

        try:
            check_path(plot)
            require("matplotlib", "plot")  # before any work, not after the model was checked
        except InitcheckError as e:
            fail(e, verbose)
    sys.exit(check(settings, verbose, plot))


def _given(ctx: click.Context) -> dict[str, Any]:
    """The options the user typed (not click's defaults), under their Settings names."""
    out: dict[str, Any] = {}
    for param, name in _FIELDS.items():
        if ctx.get_parameter_source(param) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            out[name] = ctx.params[param]
    return out


def _explain(codes: list[str], verbose: bool) -> None:
    from .docs import load, rule_page

    load()
    if len(codes) != 1 or codes[0].upper() not in RULES:
        shown = " ".join(codes) or "(none)"
        fail(UsageError(f"rule {shown}", f"name one code; valid codes: {', '.join(sorted(RULES))}"), verbose)
    click.echo(rule_page(RULES[codes[0].upper()]), nl=False)
