"""Launch errors: one clear line on stderr and exit 2, never a traceback.

Why: a newcomer's typo (a missing mapping file, an unquoted glob, a wrong URL) must read
as what to fix, not as a Python stack. Everything the launcher refuses raises
:class:`LaunchError` with the line to print; anything else that escapes at launch is a
bug of ours and is reported as one line too, with the hint to re-run with ``--debug``
(or ``IOMT_FHIR_DEBUG=1``), which prints the traceback for a bug report.

Messages name flags, paths, URLs (without credentials) and statuses, never message
content or secrets.
"""
import os
import sys
import traceback
import urllib.parse
from typing import Callable, List, Tuple

#: The exit statuses of every command (README "Operating it"): 0 done, 1 the run or
#: command finished but failed some records (see its summary), 2 refused (one line says why).
EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_REFUSED = 2
DEBUG_FLAG = "--debug"
DEBUG_ENV = "IOMT_FHIR_DEBUG"
PREFIX = "iomt-fhir: error: "


class LaunchError(Exception):
    """The launch is refused; ``str(self)`` is the line (or, for mapping problems, lines) to print."""


def quiet_library_warnings() -> None:
    """Google client libraries warn about Python/grpc versions on import; that noise on
    stderr would bury the one line a launch error prints."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")


def take_debug_flag(argv: List[str]) -> Tuple[bool, List[str]]:
    """(debug wanted?, argv without ``--debug``): ``--debug`` may stand anywhere."""
    quiet_library_warnings()
    rest = [a for a in argv if a != DEBUG_FLAG]
    if len(rest) != len(argv):
        os.environ[DEBUG_ENV] = "1"  # so nested launchers (cli -> run) see it too
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"), rest


def safe_url(url: str) -> str:
    """The URL without user:password@ or a query string (which may hold a key)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_http_url(flag: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LaunchError(f"{flag} {safe_url(url)!s} is not an http(s) URL "
                          f"(e.g. https://fhir.example.org/fhir)")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def run_reported(fn: Callable[[], int], debug: bool) -> int:
    """Run ``fn``; a :class:`LaunchError` or unexpected exception becomes a short report."""
    try:
        return fn()
    except LaunchError as e:
        if debug:
            traceback.print_exc()
        text = str(e)
        print(text if "\n" in text else PREFIX + text, file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print(PREFIX + "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit:
        raise
    except Exception as e:  # a bug of ours: still one line, the traceback on request
        if debug:
            traceback.print_exc()
        print(f"{PREFIX}{type(e).__name__}: {one_line(e)} "
              f"(re-run with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_REFUSED
