"""cli: parse, call one library function, print (human text on stdout, or one JSON document).

Progress and logs go to stderr. A :class:`featx.FeatxError` becomes one line on stderr and exit
code 2. Each command group lives in its own module below and registers itself on ``app``.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import typer

try:  # recent typer vendors click; older ones use the click package
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from featx.errors import FeatxError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Transfer learning on images by cached features: embed once, fit classifiers in seconds.",
)
err = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def emit(result: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print ``result`` as JSON, or call ``human`` to print it for a person."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        human()


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr, driven by (stage, done, total) callbacks."""
    if not enabled or not err.is_terminal:
        yield lambda stage, done, total: None
        return
    tasks: dict[str, Any] = {}
    columns = (TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)
        yield update


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``featx ...``. User errors print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _ARGV[:] = argv
    try:
        code = app(args=argv, prog_name="featx", standalone_mode=False)
    except FeatxError as e:
        _fail(as_flags(e, argv))
    except click_errors.UsageError as e:
        hint = f" (see featx {e.ctx.info_name} --help)" if e.ctx and e.ctx.parent else ""
        _fail(e.format_message() + hint)
    except click_errors.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


# library parameter -> the CLI option's Python name, where the two differ
PARAM_ALIASES = {"out": "output", "fractions": "split", "fmt": "fmt"}


def as_flags(e: FeatxError, argv: list[str]) -> str:
    """The error's message with the parameters it names written as this command's flags."""
    if not e.params:
        return str(e)
    flags = _command_flags(argv)
    return e.render(lambda name: flags.get(name) or flags.get(PARAM_ALIASES.get(name, "")))


def _command_flags(argv: list[str]) -> dict[str, str]:
    """Python name -> long flag (``batch_size`` -> ``--batch-size``) of the command in ``argv``."""
    group = typer.main.get_command(app)
    name = next((a for a in argv if not a.startswith("-")), None)
    command = getattr(group, "commands", {}).get(name)
    if command is None:
        return {}
    return {p.name: max(p.opts, key=len) for p in command.params
            if getattr(p, "param_type_name", "") == "option" and p.opts}


def check_outputs(**outputs) -> None:
    """Before any work: every output file given (None: not asked for) can be written."""
    from featx.files import check_output

    for name, path in outputs.items():
        if path is not None:
            check_output(path, f"the {name.replace('_', ' ')} file")


_ARGV: list[str] = []  # the command line being run, to name flags in warnings


def warn(message: str) -> None:
    """A warning line on stderr (the run goes on); parameters named as this command's flags."""
    err.print(f"featx: warning: {as_flags(FeatxError(message), _ARGV)}", markup=False,
              highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"featx: error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


from featx.cli import extract as _extract  # noqa: E402,F401  (registers commands)
from featx.cli import reuse as _reuse  # noqa: E402,F401  (neighbors, map, duplicates, export)
from featx.cli import fit as _fit  # noqa: E402,F401  (fit, sweep, predict)
from featx.cli import baseline as _baseline  # noqa: E402,F401  (baseline, report)
from featx.cli import audit as _audit  # noqa: E402,F401  (audit)
from featx.cli import finetune as _finetune  # noqa: E402,F401  (finetune)
