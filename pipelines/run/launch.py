"""``iomt-fhir run``: argv -> checks -> job -> progress -> summary -> exit code.

The graph itself is ``pipelines.iomt_to_fhir.build``; this module only decides what to
build and how to launch it: runner aliases and cached runner artifacts are filled in,
options are checked (one line and exit 2 for anything refused, ``pipelines.launch_errors``),
mappings are read and validated, the server is checked (preflight), and after the run the
summary decides the exit status (``pipelines.run.summary``).

    iomt-fhir run --runner=FnApiRunner --device-mapping DM.json --fhir-mapping FM.json \\
        --input 'archive/*.jsonl' --output out/observations --dead-letter out/dead-letter
"""
import logging
import sys
import time
from typing import List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import window

from pipelines.iomt_to_fhir import build
from pipelines.options import IomtFhirOptions, writer_settings
from pipelines.launch_errors import (EXIT_REFUSED, PREFIX, LaunchError, check_http_url, one_line, run_reported,
                                     take_debug_flag)
from pipelines.run import help as run_help, kafka_checks, preflight
from pipelines.run import progress as progress_report
from pipelines.run.mappings import InvalidMappings, check_mappings, read_mapping
from pipelines.run.runners import (fill_cached_runner_artifacts, flink_kafka_args, flink_stream_args,
                                   local_worker_processes, resolve_runner_aliases, runner_in, runner_line,
                                   with_batch_workers, with_default_runner)
from pipelines.run.summary import print_summary
from transforms.sinks.bulk_ndjson import write_bulk
from transforms.sinks.json_files import write_json_lines
from transforms.sources.device_events import SourceError
from transforms.sources.kafka import KafkaSourceError
from transforms.to_observations import FoldObservationsById

log = logging.getLogger(__name__)


def _check_runner(options) -> None:
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
    debug, argv = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    return run_reported(lambda: _launch_and_run(argv, debug), debug)


def _launch_and_run(argv: List[str], debug: bool) -> int:
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
        extra = flink_kafka_args(argv)
        if extra:
            argv = argv + extra
            options = PipelineOptions(argv)
            opts = options.view_as(IomtFhirOptions)
    given = argv
    if not streaming and opts.input:  # a file backfill: every core unless a runner is named
        argv = with_batch_workers(argv)
        if argv != given:
            options = PipelineOptions(argv)
            opts = options.view_as(IomtFhirOptions)
    if streaming:
        argv = with_default_runner(argv, streaming) + flink_stream_args(argv)
        if argv != given:
            options = PipelineOptions(argv)
            opts = options.view_as(IomtFhirOptions)
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
                                            ("--identity-cache-seconds", opts.identity_cache_seconds or 0, 0),
                                            ("--max-fhir-requests-per-second",
                                             opts.max_fhir_requests_per_second, 0))
                 if value is not None and value < least]
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
    capabilities: dict = {}
    if not opts.skip_preflight and not options.get_all_options().get("dry_run"):
        preflight.check_launch(opts, capabilities)
    if opts.fhir_url:
        # the server's profile (README "FHIR servers"), fixed here so every worker uses the same
        settings = writer_settings(opts, capabilities)
        opts.fhir_server_kind = settings.kind
        opts.bundle_size, opts.read_batch_size = settings.bundle_size, settings.read_batch_size
        opts.bundle_type, opts.max_fhir_requests_per_second = settings.bundle_type, settings.max_requests_per_second
        log.info("FHIR writer: %s", settings.describe())
        workers = local_worker_processes(argv)
        if settings.max_requests_per_second and workers > 1:
            # The cap is the job's (a server's quota), but each worker process throttles on its
            # own: give each its share, or W local workers send W times the cap.
            opts.max_fhir_requests_per_second = settings.max_requests_per_second / workers
            log.info("FHIR writer: at most %g requests/s in each of %d worker processes",
                     opts.max_fhir_requests_per_second, workers)
    print(runner_line(argv, given), file=sys.stderr)  # the run's first line
    p = beam.Pipeline(options=options)
    try:
        out = build(p, opts, device_text, fhir_text, streaming)
    except (SourceError, KafkaSourceError) as e:  # messages hold flags and env var names, no secrets
        raise LaunchError(str(e)) from None
    if opts.output and opts.output_format == "fhir-ndjson":
        write_bulk(out["write_items"], out["resources"], opts.output, fhir_text)
    elif opts.output and "observations" in out:  # batch files: already folded (transforms.backfill)
        write_json_lines(out["observations"], opts.output, streaming, opts.single_file_outputs, "Observations")
    elif opts.output:
        items = out["write_items"]
        if not streaming:
            # Batch: fold every partial Observation of an id into one, across windows.
            items = items | "OneWindow" >> beam.WindowInto(window.GlobalWindows())
        observations = items | "FoldById" >> FoldObservationsById(fhir_text)
        write_json_lines(observations, opts.output, streaming, opts.single_file_outputs, "Observations")
    write_json_lines(out["dead_letter"], opts.dead_letter, streaming, opts.single_file_outputs, "DeadLetters")
    if opts.kafka_topic:  # the expanded graph tells whether the read keeps reading on this runner
        stall = kafka_checks.stall_warning(runner_in(argv), p.to_runner_api(), opts.kafka_expansion_service)
        if stall:
            log.warning("%s", stall)
    reporter = progress_report.start_for(options, opts.progress_seconds)
    started = time.monotonic()
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as e:  # the runner failed: not a launch problem, exit 1
        if debug:
            import traceback
            traceback.print_exc()
        missing = opts.kafka_topic and kafka_checks.missing_topic_error(
            str(e), opts.kafka_topic, eventhubs=not opts.kafka_bootstrap_servers)
        if missing:
            print(PREFIX + missing, file=sys.stderr)
            return EXIT_REFUSED
        print(f"iomt-fhir: error: the run failed: {type(e).__name__}: {one_line(e)} "
              "(--debug shows the traceback)", file=sys.stderr)
        return 1
    finally:
        if reporter is not None:
            reporter.stop()
    summary = print_summary(result, opts, streaming)
    if opts.summary_file:
        progress_report.write_summary_file(opts.summary_file, summary, time.monotonic() - started)
    return summary.exit_code


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
