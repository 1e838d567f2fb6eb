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

from pipelines.launch_errors import EXIT_REFUSED
from transforms.mapping.errors import InvalidTemplateException



#: ``module:function`` of each sub-command group's ``register(sub)``, in help order.
COMMANDS = (
    "pipelines.commands.mapping:register_mapping_commands",  # validate, normalize, transform
    "pipelines.cli:register_run",                # run
    "pipelines.run.preflight:register",              # check
    "pipelines.commands.seed:register",               # seed (Patients/Devices for --identity-mode Lookup)
    "pipelines.debugger.server:register",        # debugger (mapping debugger in the browser)
    "pipelines.commands.replay:register",                 # replay
    "pipelines.commands.templates:register",              # templates list|show|export (template packs)
    "pipelines.commands.device_use:register",             # misattributed (correcting the past, device use)
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


def cmd_run(argv: List[str]) -> int:
    from pipelines.run import launch

    return launch.main(argv)


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
            return EXIT_REFUSED

    return run_reported(dispatch, debug)


if __name__ == "__main__":
    # ``python -m pipelines.cli``: this file runs as ``__main__``, but sub-command modules
    # register into ``pipelines.cli`` (the name they import); dispatch through that module.
    from pipelines import cli as _cli
    sys.exit(_cli.main())
