"""cli: parse, call one library function, print (human text on stdout, or one JSON document).

Progress and logs go to stderr. A :class:`featx.FeatxError` becomes one line on stderr and exit
code 2. Each command group lives in its own module below and registers itself on ``app``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
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
    rich_markup_mode=None,  # help texts are plain text: "[default: ...]" stays as written
    help="Transfer learning on images by cached features: embed once, fit classifiers in seconds.",
)
err = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.callback()
def _options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v",
        help="Also show third-party start-up output (TensorFlow's; or set FEATX_VERBOSE=1)."),
    no_progress: bool = typer.Option(
        False, "--quiet", "-q", help="No progress on stderr (warnings and errors still show)."),
) -> None:
    """Transfer learning on images by cached features: embed once, fit classifiers in seconds."""
    from featx import quiet

    _QUIET[0] = no_progress
    if verbose:
        os.environ[quiet.VERBOSE_ENV] = "1"
    if quiet.verbose():
        quiet.uninstall()
    else:
        quiet.install()


def emit(result: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print ``result`` as JSON, or call ``human`` to print it for a person."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        human()


_QUIET = [False]  # --quiet: no progress


def quiet_progress() -> bool:
    """Whether ``--quiet`` asked for no progress lines."""
    return _QUIET[0]


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """Progress on stderr, driven by (stage, done, total) callbacks: a rich bar on a terminal,
    plain lines (:class:`PlainProgress`) in a log or a pipe; none with ``--quiet``. ``--json``
    keeps it: it goes to stderr, the JSON document alone to stdout."""
    if not enabled or quiet_progress():
        yield lambda stage, done, total: None
        return
    if not err.is_terminal:
        yield PlainProgress(lambda line: err.print(line, markup=False, highlight=False,
                                                   soft_wrap=True),
                            interval=float(os.environ.get("FEATX_PROGRESS_SECONDS", 5)))
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


class StopRequest(threading.Event):
    """Set by the first Ctrl-C or SIGTERM (see :func:`graceful_stop`); ``signum`` says which."""

    signum: int = signal.SIGINT

    @property
    def exit_code(self) -> int:
        """130 for Ctrl-C, 143 for SIGTERM: 128 + the signal's number, as a shell reports it."""
        return 128 + int(self.signum)


@contextmanager
def graceful_stop(what: str = "the current batch") -> Iterator[StopRequest]:
    """While the block runs, the first Ctrl-C or SIGTERM sets the yielded event and says at once
    on stderr that ``what`` is being finished; a second one stops at once (KeyboardInterrupt).

    The message comes from a watcher thread woken through :func:`signal.set_wakeup_fd`, so it is
    printed even while the main thread is inside a long model call (Python runs signal handlers
    only between bytecodes of the main thread)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled on the main thread
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    count = [0]

    def handler(signum, frame) -> None:
        count[0] += 1
        if count[0] > 1:
            raise KeyboardInterrupt

    def watch() -> None:
        while data := os.read(r, 64):
            if not stop.is_set() and data[0] in (signal.SIGINT, signal.SIGTERM):
                stop.signum = signal.Signals(data[0])
                name = "Ctrl-C" if stop.signum == signal.SIGINT else "SIGTERM"
                os.write(2, f"featx: {name}: finishing {what}, then stopping and keeping "
                            f"every vector embedded so far (Ctrl-C again: stop now)\n".encode())
                stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="featx-signals", daemon=True)
    watcher.start()
    try:
        yield stop
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(w)  # the watcher reads end-of-file and returns
        watcher.join(timeout=5)
        os.close(r)


class PlainProgress:
    """Progress as plain lines for a log or a pipe: one line every ``interval`` seconds while a
    stage runs (``embed: 640/2000 (32%), about 7 min left``) and its last line, so a stage that
    ends within the first ``interval`` says nothing."""

    def __init__(self, write: Callable[[str], None], interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.interval, self.clock = write, interval, clock
        self.stages: dict[str, tuple[float, int]] = {}  # stage -> (time, done) of its first call
        self.last: dict[str, float] = {}  # stage -> time of its last line (or of its start)
        self.printed: set[str] = set()
        self.finished: set[str] = set()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if stage not in self.stages:
            self.stages[stage] = (now, done)
            self.last[stage] = now
        if stage in self.finished:
            return
        due = now - self.last[stage] >= self.interval
        if done >= total:
            self.finished.add(stage)
            if stage not in self.printed and not due:
                return
        elif not due:
            return
        self.last[stage] = now
        self.printed.add(stage)
        share = f" ({100 * done // total}%)" if total else ""
        self.write(f"{stage}: {done}/{total}{share}{self._left(stage, now, done, total)}")

    def _left(self, stage: str, now: float, done: int, total: int) -> str:
        t0, done0 = self.stages[stage]
        if done >= total or done <= done0 or now <= t0:
            return ""
        seconds = (total - done) * (now - t0) / (done - done0)
        return f", about {seconds / 60:.0f} min left" if seconds >= 90 else \
            f", about {seconds:.0f} s left"


class Command(typer.core.TyperCommand):
    """Help as featx writes it: ``featx extract [OPTIONS] DATA_DIR``, arguments in capitals."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [self.options_metavar or "", *(
            _argument_name(p) if p.required else f"[{_argument_name(p)}]"
            for p in self.get_params(ctx) if p.param_type_name == "argument")]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for p in self.get_params(ctx):
            record = p.get_help_record(ctx)
            if record is None:
                continue
            if p.param_type_name == "argument":
                sections["Arguments"].append((_argument_name(p), record[1]))
            else:
                sections["Options"].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _argument_name(param: Any) -> str:
    return param.name.upper() + ("..." if param.nargs != 1 else "")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``featx ...``. User errors print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for flag in ("--verbose", "--quiet"):  # also after the command: featx fit STORE --verbose
        if flag in argv[1:]:
            argv = [flag, *(a for a in argv if a != flag)]
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


def flagged(message: str) -> str:
    """A library message (parameters in backticks) with this command's flags in their place."""
    return as_flags(FeatxError(message), _ARGV)


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
from featx.cli import evaluate as _evaluate  # noqa: E402,F401  (evaluate)
from featx.cli import serve as _serve  # noqa: E402,F401  (serve)
from featx.cli import review as _review  # noqa: E402,F401  (review)
from featx.cli import curve as _curve  # noqa: E402,F401  (curve, suggest)
from featx.cli import export_model as _export_model  # noqa: E402,F401  (export-model)

for _info in app.registered_commands:  # every command's help through Command
    if _info.cls in (None, typer.core.TyperCommand):
        _info.cls = Command
