"""The main job: device messages -> measurements -> groups -> Observations -> FHIR / files.

Assembly only; every step lives in ``transforms``. Mappings are read once here (from
any Beam filesystem), validated before anything runs (an invalid mapping stops the
launch with every problem listed), and shipped to the workers as text.

    iomt-fhir run --runner=FnApiRunner --device-mapping DM.json --fhir-mapping FM.json \\
        --input 'archive/*.jsonl' --output out/observations --dead-letter out/dead-letter
"""
import json
import logging
import sys
import time
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import window

from pipelines import progress_report
from pipelines.options import IomtFhirOptions
from pipelines.runners import fill_cached_runner_artifacts, resolve_runner_aliases
from pipelines.run_summary import SUMMARY_COUNTERS  # noqa: F401  (importable from here, as before)
from transforms.dead_letter import DEAD_LETTER_TAG
from transforms.group import GroupMeasurements, window_for_mapping
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping import validation
from transforms.normalize import Normalize
from transforms.kafka_source import KafkaSourceError
from transforms.sources import ReadDeviceEvents, SourceError, kafka_source_from_options
from transforms.bulk_ndjson import CreateModeIdsFactory, write_bulk
from transforms.to_observations import RESOURCES_TAG, FoldObservationsById, ServerIdentity, ToObservations

log = logging.getLogger(__name__)


class InvalidMappings(Exception):
    """The mappings have errors; the message lists every one (no message content, only templates)."""


def read_text(path: str) -> str:
    with FileSystems.open(path) as f:
        return f.read().decode("utf-8-sig")


def check_mappings(device_text: str, fhir_text: str, device_name: str = "device mapping",
                   fhir_name: str = "FHIR mapping") -> List[str]:
    """Refuse invalid mappings; return cross-check warnings (the reference accepts those)."""
    device = load_device_mapping(device_text)
    fhir = load_fhir_mapping(fhir_text)
    problems = [f"{device_name}: {e}" for e in device.errors] + [f"{fhir_name}: {e}" for e in fhir.errors]
    if problems:
        raise InvalidMappings("Invalid mappings:\n" + "\n".join(problems))
    names = {validation.DEVICE: device_name, validation.FHIR: fhir_name}
    return [f"{names[side]}: {w}" for side, w in validation.cross_check_by_side(device, fhir)]


def _to_json_line(record) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)


def write_json_lines(pcoll, prefix: str, streaming: bool, single_file: bool, label: str):
    """JSON lines to files: one file per output in batch with ``single_file``, windowed files when streaming."""
    lines = pcoll | f"{label}ToJson" >> beam.Map(_to_json_line)
    if streaming:
        from transforms.streaming_files import flushed_windows, pane_file_naming
        return (lines
                | f"{label}Window" >> flushed_windows()
                | f"{label}Write" >> fileio.WriteToFiles(path=prefix, shards=1,
                                                         file_naming=pane_file_naming(label, ".jsonl")))
    if single_file:
        return lines | f"{label}Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl",
                                                              num_shards=1, shard_name_template="")
    return lines | f"{label}Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")


class FhirClientFactory:
    """Builds the FHIR client on the worker (sessions are not picklable); auth from the environment."""

    def __init__(self, fhir_url: str, auth_kind: str, outage_seconds: Optional[float] = None,
                 max_requests_per_second: float = 0.0):
        self.fhir_url = fhir_url
        self.auth_kind = auth_kind
        self.outage_seconds = outage_seconds  # None: the client's short default budget
        self.max_requests_per_second = max_requests_per_second

    def __call__(self):
        from transforms.fhir.client_setup import worker_client
        return worker_client(self.fhir_url, self.auth_kind, self.outage_seconds,
                             self.max_requests_per_second)


class ServerIdentityFactory:
    """Identity resolution against the FHIR server, in the reference's modes."""

    def __init__(self, client_factory: FhirClientFactory, mode: str, device_system: str):
        self.client_factory = client_factory
        self.mode = mode
        self.device_system = device_system

    def __call__(self):
        from transforms.fhir.identity import IdentityService
        client_factory, mode, system = self.client_factory, self.mode, self.device_system
        return ServerIdentity(lambda: IdentityService(client_factory(), mode, system or None))


def build(p: beam.Pipeline, opts: IomtFhirOptions, device_text: str, fhir_text: str,
          streaming: bool = False) -> Dict[str, beam.PCollection]:
    """Wire the pipeline onto ``p``; returns its main PCollections (for tests and sinks)."""
    reader = ReadDeviceEvents(opts.input, opts.input_format, opts.pubsub_subscription,
                              kafka_source_from_options(opts))
    events = p | "Read" >> reader
    normalized = events | "Normalize" >> Normalize(device_text)
    fhir_mapping = load_fhir_mapping(fhir_text).ensure_valid()
    window_seconds = opts.window_seconds or window_for_mapping(fhir_mapping)
    groups = normalized.measurements | "Group" >> GroupMeasurements(
        window_seconds, opts.allowed_lateness_seconds, opts.early_firing_seconds if streaming else 0,
        regroup_late=streaming)
    identity = None
    if opts.fhir_url:
        from transforms.fhir.retry import outage_budget
        client_factory = FhirClientFactory(opts.fhir_url, opts.fhir_auth,
                                           outage_budget(opts.fhir_outage_seconds, streaming),
                                           opts.max_fhir_requests_per_second)
        identity = ServerIdentityFactory(client_factory, opts.identity_mode, opts.device_identifier_system)
    elif getattr(opts, "output_format", None) == "fhir-ndjson":  # bulk files: Create mode's ids, no server
        identity = CreateModeIdsFactory(opts.device_identifier_system)
    converted = groups | "ToObservations" >> ToObservations(fhir_text, identity)
    dead_letters = [normalized[DEAD_LETTER_TAG],
                    converted[DEAD_LETTER_TAG] | "DeadLetterWindow" >> beam.WindowInto(window.GlobalWindows())]
    if reader.dead_letters is not None:  # files that could not be read (stage "read")
        dead_letters.append(reader.dead_letters)
    out = {"measurements": normalized.measurements, "write_items": converted.observations,
           "resources": converted[RESOURCES_TAG]}
    if opts.fhir_url:
        from transforms.write_fhir import DEFAULT_FLUSH_SECONDS, MappingMerge, WriteToFhir
        written = converted.observations | "WriteFhir" >> WriteToFhir(
            client_factory, MappingMerge(fhir_mapping),
            bundle_size=opts.bundle_size, read_batch_size=opts.read_batch_size,
            max_in_flight=opts.max_in_flight,
            observation_cache_size=opts.observation_cache_size,
            flush_seconds=DEFAULT_FLUSH_SECONDS if streaming else 0.0)
        out["outcomes"] = written.outcomes
        _ = written.outcomes | "CountOutcomes" >> beam.Map(progress_report.tally_outcome)
        dead_letters.append(written[DEAD_LETTER_TAG] | "WriteDeadLetterWindow" >> beam.WindowInto(
            window.GlobalWindows()))
    out["dead_letter"] = tuple(dead_letters) | "AllDeadLetters" >> beam.Flatten()
    _ = out["dead_letter"] | "CountDeadLetters" >> beam.Map(progress_report.tally_dead_letter)
    return out


def print_summary(result, opts: Optional[IomtFhirOptions] = None, argv: Optional[List[str]] = None,
                  streaming: bool = False):
    """Counts by metric name (reference names), dead letters by stage/type, where they are
    and how to replay them: no content, no ids. Returns the ``RunSummary``."""
    from pipelines import run_summary
    from pipelines.replay import dead_letter_glob, replay_hint

    prefix = getattr(opts, "dead_letter", None)
    summary = run_summary.summarize(result, prefix, getattr(opts, "max_dead_letter_fraction", None))
    if prefix:
        summary.dead_letter_files = dead_letter_glob(prefix, streaming)
    hint = replay_hint(opts, streaming) if opts is not None else ""
    for line in summary.lines(hint):
        print(line, file=sys.stderr)
    return summary


def read_mapping(flag: str, path: str) -> str:
    """The mapping file's text; a missing, unreadable or non-UTF-8 file is one launch line."""
    from pipelines.launch_errors import LaunchError

    try:
        return read_text(path)
    except UnicodeDecodeError as e:
        raise LaunchError(f"{flag} {path}: not UTF-8 text (byte {e.start})") from None
    except Exception as e:  # FileNotFoundError, BeamIOError (other filesystems), PermissionError ...
        causes = list(getattr(e, "exception_details", None) or {}) and list(e.exception_details.values())
        cause = causes[0] if causes else e
        reason = getattr(cause, "strerror", None) or f"{type(cause).__name__}: {cause}"
        raise LaunchError(f"{flag} {path}: cannot read the mapping: {reason}") from None


def _check_runner(options) -> None:
    from pipelines.launch_errors import LaunchError

    name = options.view_as(StandardOptions).runner
    if name is None:
        return
    from apache_beam.runners.runner import create_runner
    try:
        create_runner(name)
    except (ValueError, ImportError, AttributeError):
        raise LaunchError(f"--runner {name}: not a Beam runner (e.g. FnApiRunner, DirectRunner, PrismRunner, "
                          "DataflowRunner, FlinkRunner, or a runner class's full name)") from None


def main(argv: Optional[List[str]] = None) -> int:
    """``iomt-fhir run``: exit 0 all written, 1 failures dead-lettered (see run_summary), 2 refused."""
    from pipelines.launch_errors import run_reported, take_debug_flag

    debug, argv = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    return run_reported(lambda: _launch_and_run(argv, debug), debug)


def _launch_and_run(argv: List[str], debug: bool) -> int:
    from pipelines import preflight, run_help
    from pipelines.launch_errors import LaunchError, check_http_url, one_line

    if any(a in run_help.HELP_FLAGS for a in argv):
        run_help.print_run_help()
        return 0
    if run_help.BEAM_HELP_FLAG in argv:
        run_help.print_beam_help()
        return 0
    argv = fill_cached_runner_artifacts(resolve_runner_aliases(argv))
    run_help.check_values(argv)
    options = PipelineOptions(argv)
    opts = options.view_as(IomtFhirOptions)
    # Pub/Sub and Event Hubs / Kafka are unbounded: always a streaming job.
    streaming = (options.view_as(StandardOptions).streaming or bool(opts.pubsub_subscription)
                 or bool(opts.kafka_topic))
    if opts.kafka_topic:  # Kafka IO on Flink needs checkpointing (offset commits)
        from transforms.kafka_source import flink_kafka_args
        extra = flink_kafka_args(argv)
        if extra:
            argv = argv + extra
            options = PipelineOptions(argv)
            opts = options.view_as(IomtFhirOptions)
    if streaming:
        options.view_as(StandardOptions).streaming = True
    missing = [flag for flag, value in (("--device-mapping", opts.device_mapping),
                                        ("--fhir-mapping", opts.fhir_mapping),
                                        ("--dead-letter", opts.dead_letter)) if not value]
    if missing:
        raise LaunchError("missing required options: " + ", ".join(missing) + " (iomt-fhir run --help)")
    device_text = read_mapping("--device-mapping", opts.device_mapping)
    fhir_text = read_mapping("--fhir-mapping", opts.fhir_mapping)
    try:
        for warning in check_mappings(device_text, fhir_text, opts.device_mapping, opts.fhir_mapping):
            log.warning("%s", warning)
    except InvalidMappings as e:
        raise LaunchError(str(e)) from None
    too_small = [f"{flag} must be at least {least}"
                 for flag, value, least in (("--bundle-size", opts.bundle_size, 1),
                                            ("--read-batch-size", opts.read_batch_size, 1),
                                            ("--max-in-flight", opts.max_in_flight, 1),
                                            ("--observation-cache-size", opts.observation_cache_size, 0),
                                            ("--fhir-outage-seconds", opts.fhir_outage_seconds or 0, 0),
                                            ("--max-fhir-requests-per-second",
                                             opts.max_fhir_requests_per_second, 0))
                 if value < least]
    fraction = opts.max_dead_letter_fraction
    if fraction is not None and not 0 <= fraction <= 1:
        too_small.append("--max-dead-letter-fraction must be between 0 and 1")
    if too_small:
        raise LaunchError("; ".join(too_small))
    if not opts.output and not opts.fhir_url:
        raise LaunchError("give --output (Observation files) or --fhir-url (a FHIR server)")
    if opts.output_format == "fhir-ndjson" and (streaming or opts.identity_mode != "Create" or not opts.output):
        raise LaunchError("--output-format fhir-ndjson is a batch first load: it needs --output DIR, "
                          "--identity-mode Create and a file --input")
    if opts.fhir_url:
        check_http_url("--fhir-url", opts.fhir_url)
    _check_runner(options)
    # a dry run (Dataflow's --dry_run) only translates the job: nothing reaches the server
    if not opts.skip_preflight and not options.get_all_options().get("dry_run"):
        preflight.check_launch(opts)
    p = beam.Pipeline(options=options)
    try:
        out = build(p, opts, device_text, fhir_text, streaming)
    except (SourceError, KafkaSourceError) as e:  # messages hold flags and env var names, no secrets
        raise LaunchError(str(e)) from None
    if opts.output and opts.output_format == "fhir-ndjson":
        write_bulk(out["write_items"], out["resources"], opts.output, fhir_text)
    elif opts.output:
        items = out["write_items"]
        if not streaming:
            # Batch: fold every partial Observation of an id into one, across windows.
            items = items | "OneWindow" >> beam.WindowInto(window.GlobalWindows())
        observations = items | "FoldById" >> FoldObservationsById(fhir_text)
        write_json_lines(observations, opts.output, streaming, opts.single_file_outputs, "Observations")
    write_json_lines(out["dead_letter"], opts.dead_letter, streaming, opts.single_file_outputs, "DeadLetters")
    reporter = progress_report.start_for(options, opts.progress_seconds)
    started = time.monotonic()
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as e:  # the runner failed: not a launch problem, exit 1
        if debug:
            import traceback
            traceback.print_exc()
        print(f"iomt-fhir: error: the run failed: {type(e).__name__}: {one_line(e)} "
              "(--debug shows the traceback)", file=sys.stderr)
        return 1
    finally:
        if reporter is not None:
            reporter.stop()
    summary = print_summary(result, opts, argv, streaming)
    if opts.summary_file:
        progress_report.write_summary_file(opts.summary_file, summary, time.monotonic() - started)
    return summary.exit_code


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
