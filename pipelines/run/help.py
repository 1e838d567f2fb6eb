"""``iomt-fhir run --help`` and the one-line check of the run's own option values.

Why a parser of our own next to Beam's: Beam parses options lazily and, on a bad value,
prints its whole usage and exits; and its ``--help`` knows nothing of this pipeline.
Here the pipeline's options (``pipelines.options.IomtFhirOptions``, so options other
helpers add show up by themselves) are put on a plain argparse parser, once to print
help by group with defaults, once to check values (``--bundle-size=abc``, a choice not
offered) so the error is one line. Beam's own options (runner, Dataflow, Flink...) are
left to Beam: ``iomt-fhir run --help-beam``.
"""
import argparse
import sys
from typing import List

from pipelines.launch_errors import LaunchError

HELP_FLAGS = ("-h", "--help")
BEAM_HELP_FLAG = "--help-beam"

USAGE = "iomt-fhir run [OPTIONS] [BEAM OPTIONS]"

DESCRIPTION = """\
Run the pipeline: device messages -> measurements (device mapping) -> groups in
fixed event-time windows -> FHIR R4 Observations (FHIR mapping) -> a FHIR server or
JSON-lines files. Required: --device-mapping, --fhir-mapping, --dead-letter, one
source, and --fhir-url or --output. Options take --dash-case or --snake_case."""

EPILOG = """\
Beam's own options (--runner, --streaming, Dataflow's --project/--region/
--temp_location, Flink's --flink_master ...) pass through to Beam; list them with
  iomt-fhir run --help-beam
--runner=FnApiRunner runs locally in this process.

Exit status: 0 everything was written; 1 some writes or identity lookups failed
(dead-lettered), the dead-letter fraction exceeded --max-dead-letter-fraction, or the
runner failed; 2 the launch was refused (one line on stderr says why; --debug shows
the traceback).

Examples:
  # local backfill of archived device files into a FHIR server
  iomt-fhir run --runner=FnApiRunner \\
    --device-mapping devicecontent.json --fhir-mapping fhirmapping.json \\
    --input 'archive/2024-*/*.jsonl' \\
    --fhir-url https://fhir.example.org/fhir --fhir-auth azure \\
    --dead-letter out/dead-letter

  # streaming from Pub/Sub on Dataflow
  iomt-fhir run --runner=DataflowRunner --project P --region europe-west1 \\
    --temp_location gs://BUCKET/tmp \\
    --device-mapping gs://BUCKET/devicecontent.json \\
    --fhir-mapping gs://BUCKET/fhirmapping.json \\
    --pubsub-subscription projects/P/subscriptions/devices \\
    --fhir-url https://healthcare.googleapis.com/v1/projects/P/locations/L/datasets/D/fhirStores/S/fhir \\
    --fhir-auth google --dead-letter gs://BUCKET/dead-letter
"""


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises :class:`LaunchError` (one line) instead of printing usage and exiting."""

    def error(self, message):
        raise LaunchError(message)


def _flags(action) -> str:
    """``--bundle-size N``: the dash-case spellings only (the snake_case ones work too)."""
    dashed = [o for o in action.option_strings if "_" not in o] or action.option_strings[:1]
    if action.nargs == 0:
        return ", ".join(dashed)
    metavar = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}" if action.choices
                                 else {int: "N", float: "F"}.get(action.type, action.dest.upper()))
    return ", ".join(dashed) + " " + metavar


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=100)

    def _format_action_invocation(self, action):
        return _flags(action) if action.option_strings else super()._format_action_invocation(action)


def _with_default(action) -> str:
    text = (action.help or "").strip()
    default = action.default
    if action.option_strings and default not in (None, False, "", argparse.SUPPRESS) and "%(default)" not in text:
        text = (text + " " if text else "") + f"(default: {str(default).replace('%', '%%')})"
    return text


def pipeline_parser(raising: bool = False) -> argparse.ArgumentParser:
    """A parser holding exactly the pipeline's options (IomtFhirOptions), by group."""
    from pipelines.options import IomtFhirOptions
    from transforms.beam_private import add_option_arguments, parser_actions

    cls = _RaisingParser if raising else argparse.ArgumentParser
    p = cls(prog="iomt-fhir run", usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
            formatter_class=_Formatter, add_help=False, allow_abbrev=False)
    add_option_arguments(IomtFhirOptions, p)
    for action in parser_actions(p):
        action.help = _with_default(action) or None
    return p


def print_run_help(out=None) -> None:
    (out or sys.stdout).write(pipeline_parser().format_help())


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def print_beam_help(out=None) -> None:
    """Beam's options of every registered options class (runner, Dataflow, Flink, ...)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.options import IomtFhirOptions
    from transforms.beam_private import add_option_arguments

    parser = argparse.ArgumentParser(prog="iomt-fhir run", usage=USAGE, add_help=False,
                                     conflict_handler="resolve",
                                     formatter_class=lambda prog: argparse.HelpFormatter(prog, width=100))
    for cls in _all_subclasses(PipelineOptions):
        if cls is IomtFhirOptions:
            continue  # shown by iomt-fhir run --help
        try:
            add_option_arguments(cls, parser)
        except Exception:  # an options class of some plugin that does not add cleanly
            continue
    (out or sys.stdout).write(parser.format_help())


def check_values(argv: List[str]) -> None:
    """Raise a one-line :class:`LaunchError` for a bad value of one of the pipeline's options."""
    pipeline_parser(raising=True).parse_known_args(argv)
