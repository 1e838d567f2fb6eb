"""iomt-fhir: the mapping debugger and the pipeline launcher.

Sub-commands (a contract other tools rely on; see README):

* ``validate``  -- every problem of the mappings, one line each on stderr; exit 2 if any.
* ``normalize`` -- device messages (JSON lines) -> measurements (JSON lines).
* ``transform`` -- measurements (JSON lines) -> FHIR R4 Observations (JSON lines).
* ``run``       -- the Beam pipeline (see ``pipelines.iomt_to_fhir``).

A failing input line never stops the others: it becomes one JSON error line
(``{"line", "error", "message"}``) on ``--errors`` and processing goes on. Error
messages never contain message content (PHI), only field and expression names.

Adding a sub-command (why a list of names: each command lives in its own module and
is imported only to build the parser, so keep heavy imports such as Beam inside the
command's function): write ``register(sub)`` in your module, where ``sub`` is the
``argparse`` sub-parsers object; add a parser with ``sub.add_parser(NAME, help=...)``
and ``set_defaults(func=handler)`` (``handler(args) -> exit code``), or, for a command
that parses its own arguments (like ``run``, which Beam parses), call
``add_passthrough(sub, NAME, help, handler)`` (``handler(argv) -> exit code``). Then add
``"your.module:register"`` to ``COMMANDS``. Launch problems: raise
``pipelines.launch_errors.LaunchError("one line")`` -> printed as one line, exit 2.
"""
import argparse
import json
import sys
from typing import IO, Callable, Dict, Iterator, List, Optional, Tuple

from transforms.mapping.errors import (InvalidDataFormatException, InvalidTemplateException,
                                       MappingError)

EXIT_INVALID = 2


def _open_in(path: Optional[str]) -> IO:
    """The input as bytes (stdin's buffer when it has one): lines are decoded one by one."""
    if path in (None, "-"):
        return getattr(sys.stdin, "buffer", sys.stdin)
    return open(path, "rb")


def _open_out(path: Optional[str], default: IO[str]) -> IO[str]:
    return default if path in (None, "-") else open(path, "w", encoding="utf-8")


def _lines(stream: IO) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text) of each non-blank line (``offline.numbered_lines``)."""
    from transforms.mapping.offline import numbered_lines

    return numbered_lines(stream)


def _error_line(out: IO[str], line: int, exc: BaseException) -> None:
    from transforms.dead_letter import error_type_of

    out.write(json.dumps({"line": line, "error": error_type_of(exc), "message": str(exc)}) + "\n")


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _ensure_valid(path: str, mapping):
    """Print every problem of an invalid mapping (``FILE:LINE:POS: severity: message``), exit 2."""
    from transforms.mapping.validation import Problem

    if not mapping.valid:
        for e in mapping.errors:
            print(str(Problem(path, e)), file=sys.stderr)
        raise SystemExit(EXIT_INVALID)
    return mapping


def _load_valid_device_mapping(path: str):
    from transforms.mapping.validation import load_device

    return _ensure_valid(path, load_device(path))


def _load_valid_fhir_mapping(path: str):
    from transforms.mapping.validation import load_fhir

    return _ensure_valid(path, load_fhir(path))


def _open_input(path: Optional[str]) -> IO[str]:
    try:
        return _open_in(path)
    except OSError as e:
        print(f"iomt-fhir: error: cannot read input {path}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def _open_errors(path: Optional[str]) -> IO[str]:
    try:
        return _open_out(path, sys.stderr)
    except OSError as e:
        print(f"iomt-fhir: error: cannot write errors to {path}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def cmd_validate(args) -> int:
    from transforms.mapping.validation import validate

    problems = validate(args.device_mapping, args.fhir_mapping)
    for p in problems:
        print(str(p), file=sys.stderr)
    if problems:
        return EXIT_INVALID
    print("valid", file=sys.stderr)
    return 0


def parse_message(line: str, input_format: str):
    """One input line -> the message as the reference sees it (``offline.parse_message``)."""
    from transforms.mapping.offline import parse_message as parse

    return parse(line, input_format)


def cmd_normalize(args) -> int:
    mapping = _load_valid_device_mapping(args.device_mapping)
    out = sys.stdout
    stream = _open_input(args.input)
    errors = _open_errors(args.errors)
    from transforms.mapping.offline import normalize_lines

    try:
        for number, measurements, exc in normalize_lines(mapping, _lines(stream), args.input_format):
            if exc is not None:  # a bug of ours must not stop the other lines either
                _error_line(errors, number, exc)
                continue
            for m in measurements:
                out.write(_dump(m.to_json()) + "\n")
    finally:
        _close(stream, errors)
    out.flush()
    return 0


def _close(stream: IO[str], errors: IO[str]) -> None:
    if stream not in (sys.stdin, getattr(sys.stdin, "buffer", None)):
        stream.close()
    if errors is sys.stderr:
        errors.flush()
    else:
        errors.close()


def cmd_transform(args) -> int:
    from transforms.mapping.measurement import Measurement
    from transforms.mapping.offline import observations_for

    mapping = _load_valid_fhir_mapping(args.fhir_mapping)
    stream = _open_input(args.input)
    errors = _open_errors(args.errors)
    measurements: List[Tuple[int, Measurement]] = []
    try:
        for number, line in _lines(stream):
            try:
                value = json.loads(line)
            except ValueError:
                _error_line(errors, number, InvalidDataFormatException("The line is not valid JSON."))
                continue
            try:
                measurements.append((number, Measurement.from_json(value)))
            except Exception as e:  # MappingError, or a shape from_json does not expect
                _error_line(errors, number, e)
        for obs, failure in observations_for(mapping, measurements):
            if failure is not None:
                line, exc = failure
                _error_line(errors, line, exc)
            else:
                sys.stdout.write(_dump(obs) + "\n")
    finally:
        _close(stream, errors)
    sys.stdout.flush()
    return 0


def cmd_run(argv: List[str]) -> int:
    from pipelines import iomt_to_fhir

    return iomt_to_fhir.main(argv)


#: ``module:function`` of each sub-command group's ``register(sub)``, in help order.
COMMANDS = (
    "pipelines.cli:register_mapping_commands",  # validate, normalize, transform
    "pipelines.cli:register_run",                # run
    "pipelines.preflight:register",              # check
    "pipelines.seed_cli:register",               # seed (Patients/Devices for --identity-mode Lookup)
    "pipelines.debugger.server:register",        # debugger (mapping debugger in the browser)
    "pipelines.replay:register",                 # replay
)

#: commands that parse their own argv (filled by ``add_passthrough``)
PASSTHROUGH: Dict[str, Callable[[List[str]], int]] = {}

DESCRIPTION = "iomt-fhir: the mapping debugger and the pipeline launcher."
EPILOG = ("Exit status: 0 success; 1 the run finished but did not write everything (see its "
          "summary); 2 refused (bad mapping, option or destination; one line on stderr says why). "
          "--debug (or IOMT_FHIR_DEBUG=1) prints the traceback of an error.")


def add_passthrough(sub, name: str, help_text: str, handler: Callable[[List[str]], int]) -> None:
    """A sub-command whose arguments go unparsed to ``handler(argv)`` (it has its own --help)."""
    sub.add_parser(name, help=help_text, add_help=False)
    PASSTHROUGH[name] = handler


def register_mapping_commands(sub) -> None:
    v = sub.add_parser("validate", help="check mappings; exit 2 with one line per problem")
    v.add_argument("--device-mapping", required=True)
    v.add_argument("--fhir-mapping")
    v.set_defaults(func=cmd_validate)

    n = sub.add_parser("normalize", help="device messages (JSON lines) -> measurements")
    n.add_argument("--device-mapping", required=True)
    n.add_argument("--input", help="JSON-lines file (default: stdin)")
    n.add_argument("--input-format", choices=("body", "envelope"), default="body")
    n.add_argument("--errors", help="file for error lines (default: stderr)")
    n.set_defaults(func=cmd_normalize)

    t = sub.add_parser("transform", help="measurements (JSON lines) -> FHIR Observations")
    t.add_argument("--fhir-mapping", required=True)
    t.add_argument("--input", help="JSON-lines file of measurements (default: stdin)")
    t.add_argument("--errors", help="file for error lines (default: stderr)")
    t.set_defaults(func=cmd_transform)


def register_run(sub) -> None:
    add_passthrough(sub, "run", "run the Beam pipeline (iomt-fhir run --help)", cmd_run)


def version_text() -> str:
    """This package's version, Beam's and Python's (for bug reports)."""
    from importlib import metadata
    import platform

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"iomt-fhir {version('iomt-fhir-beam')} (apache-beam {version('apache-beam')}, "
            f"Python {platform.python_version()})")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="iomt-fhir", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--version", action="version", version=version_text())
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of an error (also: IOMT_FHIR_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in COMMANDS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from pipelines.launch_errors import run_reported, take_debug_flag

    argv = list(sys.argv[1:] if argv is None else argv)
    debug, argv = take_debug_flag(argv)
    parser = build_parser()
    if argv[:1] and argv[0] in PASSTHROUGH:
        handler, rest = PASSTHROUGH[argv[0]], argv[1:]
        return run_reported(lambda: handler(rest), debug)
    args = parser.parse_args(argv)

    def dispatch() -> int:
        try:
            return args.func(args)
        except InvalidTemplateException as e:
            print(str(e), file=sys.stderr)
            return EXIT_INVALID

    return run_reported(dispatch, debug)


if __name__ == "__main__":
    # ``python -m pipelines.cli``: this file runs as ``__main__``, but sub-command modules
    # register into ``pipelines.cli`` (the name they import); dispatch through that module.
    from pipelines import cli as _cli
    sys.exit(_cli.main())
