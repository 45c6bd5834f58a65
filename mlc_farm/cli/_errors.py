"""The one table from an error to what a person reads and the exit code, signals, and the decorator that
applies both to every command."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import click
import typer
from rich.text import Text

from mlc_farm import stopping
from mlc_farm.cli._output import err
from mlc_farm.errors import FarmError, redact_urls
from mlc_farm.toolchain.process import stop_all

_debug: list[bool] = [False]  # --debug: the traceback instead of the message
_signalled: list[int] = []  # the stop signals this process received


def show_tracebacks(on: bool) -> None:
    _debug[0] = on


def _cannot_reach(service: str, hint: str) -> Callable[[BaseException], str]:
    return lambda e: f"cannot reach {service}: {e}. {hint}"


def _http_unreachable(e: BaseException) -> str:
    """An HTTP service (the Prefect API, the Hub) that did not answer, named by the address asked."""
    try:
        asked = str(e.request.url).split("?", 1)[0]  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        asked = "a service"
    return (
        f"cannot reach {asked} ({type(e).__name__}): check PREFECT_API_URL (the Prefect API; unset, `mlc-farm "
        "build` runs its own) or HF_ENDPOINT (the Hub), and the network"
    )


class Terminated(BaseException):
    """SIGTERM, in a command that has not loaded Prefect (a BaseException, as KeyboardInterrupt is)."""


def terminated(signum: int, _frame: object) -> None:
    _signalled.append(signum)
    stop_all()
    if "prefect.exceptions" in sys.modules:  # a flow runs: Prefect's engine unwinds it on its own signal
        from prefect.exceptions import TerminationSignal

        raise TerminationSignal(signal=signum)
    raise Terminated  # not importing Prefect now: that alone takes seconds, more on a loaded machine


def interrupted(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    stopping.request()  # waits and retries in other threads end now, not at their next timeout
    signal.default_int_handler(signum, frame)


def _stopped(name: str) -> str:
    return (
        f"stopped by {name}: what finished is kept and nothing half-written is left (running toolchain steps "
        "were killed); running the same command again does the rest"
    )


def _loaded(module: str, name: str) -> tuple[type[BaseException], ...]:
    """The error class `name` of `module` if the module is loaded (else none of its errors can have been raised):
    naming a class never imports Prefect or httpx, seconds that a stopped command would wait for."""
    return (getattr(sys.modules[module], name),) if module in sys.modules else ()


def _errors() -> list[tuple[tuple[type[BaseException], ...], int, Callable[[BaseException], str]]]:
    """The one table from an error to what a person reads and the exit code (see mlc_farm.errors)."""
    # The store and the Hub map their clients' errors to ours at their boundary; the Prefect API's client is
    # httpx, met here.
    return [
        ((FarmError,), 0, str),  # 0: the error's own exit_code
        (_loaded("httpx", "TransportError"), 3, _http_unreachable),
        ((ConnectionError, TimeoutError), 3, _cannot_reach("a service", "Check the network and the endpoint settings")),
        (
            (PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError),
            2,
            lambda e: f"cannot use {getattr(e, 'filename', '') or 'a path'}: {getattr(e, 'strerror', '') or e}",
        ),
        ((OSError,), 1, lambda e: f"{getattr(e, 'filename', '') or 'I/O error'}: {getattr(e, 'strerror', '') or e}"),
        (
            (Terminated, *_loaded("prefect.exceptions", "TerminationSignal")),
            128 + signal.SIGTERM,
            lambda e: _stopped("SIGTERM"),
        ),
        ((KeyboardInterrupt,), 128 + signal.SIGINT, lambda e: _stopped("SIGINT")),
    ]


def message_for(error: BaseException) -> tuple[int, str]:
    """(exit code, message) for an error; anything unforeseen is a bug: say so, and how to report it."""
    for kinds, code, message in _errors():
        if isinstance(error, kinds):
            return code or getattr(error, "exit_code", 1), redact_urls(message(error))
    said = str(error)
    said = said if len(said) <= 2000 else f"{said[:2000]}... ({len(said)} characters)"
    return 1, redact_urls(
        f"internal error: {type(error).__name__}: {said}. Rerun with --debug and report the traceback."
    )


def handled(f: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; an error becomes one message and its exit code (the traceback only with --debug)."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            done = f(*args, **kwargs)
            sys.stdout.flush()  # here, not at exit: a reader that went away is met below
            return done
        except (typer.Exit, typer.Abort, typer.TyperException, click.exceptions.ClickException):
            raise
        except BrokenPipeError:
            # The reader of the output went away (`| head -1`): nobody to tell, nothing went wrong here.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except BaseException as e:
            if _debug[0] or isinstance(e, SystemExit):
                raise
            code, message = message_for(e)
            if _signalled and not isinstance(e, FarmError):
                # Whatever the signal interrupted mid-way (CPython raises `release unlocked lock` when the stop lands
                # in a lock's own bookkeeping) is the stop, not a bug of its own.
                code, message = 128 + _signalled[0], _stopped(signal.Signals(_signalled[0]).name)
            err.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)
            if _signalled:
                # Stopped: what this command wrote is cleaned up by now; threads still blocked in a read or a
                # retry must not hold the exit (the interpreter would join them).
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            raise typer.Exit(code) from None

    return run


def command(typer_app: typer.Typer, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@typer_app.command(...)`, with errors explained by the one table."""
    return lambda f: typer_app.command(*args, **kwargs)(handled(f))
