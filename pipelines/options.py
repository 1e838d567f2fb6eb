"""The pipeline's options: sources, mappings, windows, FHIR destination, outputs.

Standard Beam ``PipelineOptions`` so the same flags work on DirectRunner, Dataflow
and Flink (``--runner``, ``--project``, ``--region``, ``--temp_location`` ... pass through).
Secrets are never options: auth reads client secrets and tokens from the environment.
No option is ``required`` at the argparse level: Beam parses every registered options
class for every pipeline in the process, so ``pipelines.run.launch.main`` checks them.
"""
from apache_beam.options.pipeline_options import PipelineOptions
from transforms.fhir.auth import AUTH_KINDS
from transforms.fhir.identity import MODES as IDENTITY_MODES
from transforms.fhir.server_profiles import KINDS as SERVER_KINDS, WriterSettings, resolve as resolve_profile
from transforms.sources.archive_formats import INPUT_FORMATS


class IomtFhirOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("mappings")
        g.add_argument("--device_mapping", "--device-mapping", dest="device_mapping",
                       help="devicecontent.json (local path or any Beam filesystem path, e.g. gs://)")
        g.add_argument("--fhir_mapping", "--fhir-mapping", dest="fhir_mapping",
                       help="fhirmapping.json")

        s = parser.add_argument_group(
            "source (exactly one of --input, --pubsub_subscription, --kafka_topic / --eventhub_name)")
        s.add_argument("--input", help="file pattern of device archives on any Beam filesystem (historical backfill)")
        s.add_argument("--input_format", "--input-format", dest="input_format",
                       choices=INPUT_FORMATS, default="body",
                       help="body: each line is a message body; envelope: each line is {Body, Properties, "
                            "SystemProperties}; json-array: each file is one JSON array of bodies; "
                            "capture-avro: Event Hubs Capture / IoT Hub routing Avro files")
        s.add_argument("--pubsub_subscription", "--pubsub-subscription", dest="pubsub_subscription",
                       help="projects/P/subscriptions/S (streaming)")
        s.add_argument("--kafka_topic", "--kafka-topic", "--eventhub_name", "--eventhub-name",
                       dest="kafka_topic",
                       help="Event Hub (Kafka topic) to read, streaming; the connection string comes from "
                            "EVENTHUB_CONNECTION_STRING (never an option). With --kafka-bootstrap-servers: "
                            "a topic of a plain Kafka cluster")
        s.add_argument("--kafka_bootstrap_servers", "--kafka-bootstrap-servers", dest="kafka_bootstrap_servers",
                       help="HOST:PORT[,...] of a plain (unauthenticated) Kafka cluster instead of Event Hubs")
        s.add_argument("--eventhub_consumer_group", "--eventhub-consumer-group", "--kafka-consumer-group",
                       dest="eventhub_consumer_group", default="$Default",
                       help="Kafka group.id (Event Hubs consumer group)")
        s.add_argument("--kafka_offset_reset", "--kafka-offset-reset", dest="kafka_offset_reset",
                       choices=("earliest", "latest"), default="earliest",
                       help="where a consumer group without committed offsets starts (the reference: earliest)")
        s.add_argument("--kafka_expansion_service", "--kafka-expansion-service", dest="kafka_expansion_service",
                       help="HOST:PORT of a running Java expansion service; default: the one scripts/setup "
                            "cached, started with Java (on FlinkRunner its Java transforms run EMBEDDED in Flink)")
        s.add_argument("--kafka_consumer_config", "--kafka-consumer-config", dest="kafka_consumer_config",
                       action="append", default=[], metavar="KEY=VALUE",
                       help="extra non-secret Kafka consumer setting, repeatable (e.g. ssl.truststore.type=PEM, "
                            "ssl.truststore.location=/etc/ca.pem for a private cluster); passwords, keys and "
                            "JAAS settings are refused")

        w = parser.add_argument_group("grouping")
        w.add_argument("--window_seconds", "--window-seconds", dest="window_seconds", type=int, default=0,
                       help="fixed event-time window size; default: the FHIR mapping's longest "
                            "Observation period (hour or day), else 300")
        w.add_argument("--early_firing_seconds", "--early-firing-seconds", dest="early_firing_seconds",
                       type=int, default=5,
                       help="streaming: emit a window's data every N s of processing time; the latency floor "
                            "(README 'Latency'), and each open Observation is written at most once per N s, "
                            "so at most 3600/N versions an hour on the server (README 'FHIR servers')")
        w.add_argument("--allowed_lateness_seconds", "--allowed-lateness-seconds",
                       dest="allowed_lateness_seconds", type=int, default=86400)

        f = parser.add_argument_group("FHIR destination")
        f.add_argument("--fhir_url", "--fhir-url", dest="fhir_url",
                       help="FHIR R4 base URL; without it Observations are written to --output files")
        f.add_argument("--identity_mode", "--identity-mode", dest="identity_mode", default="Create",
                       choices=IDENTITY_MODES)
        f.add_argument("--identity_cache_seconds", "--identity-cache-seconds", dest="identity_cache_seconds",
                       type=float, default=None,
                       help="how long identity lookups are cached: default 7200 (sliding, the reference's) "
                            "for Create/Lookup*, 60 (absolute) for LookupByDeviceUse*, the longest a new "
                            "DeviceUseStatement takes to reach a running stream (README 'Devices that "
                            "change hands')")
        f.add_argument("--device_identifier_system", "--device-identifier-system",
                       dest="device_identifier_system", default="")
        f.add_argument("--fhir_auth", "--fhir-auth", dest="fhir_auth", default="none",
                       choices=AUTH_KINDS,
                       help="credentials come from the environment (see README)")
        f.add_argument("--fhir_server_kind", "--fhir-server-kind", dest="fhir_server_kind",
                       choices=SERVER_KINDS, default="auto",
                       help="the server's product, for safe defaults of the next four options (README "
                            "'FHIR servers'); auto: from its CapabilityStatement's software.name at launch")
        f.add_argument("--bundle_size", "--bundle-size", dest="bundle_size", type=int, default=None,
                       help="Observations per transaction bundle; default 50, AWS HealthLake 150 (the "
                            "server's profile, README 'FHIR servers')")
        f.add_argument("--bundle_type", "--bundle-type", dest="bundle_type", choices=("transaction", "batch"),
                       default=None,
                       help="default: transaction, batch where the server offers no transactions")
        f.add_argument("--read_batch_size", "--read-batch-size", dest="read_batch_size", type=int, default=None,
                       help="Observations read by id per batch request before merging (default: the "
                            "server's profile, 500; AWS HealthLake 150)")
        f.add_argument("--max_in_flight", "--max-in-flight", dest="max_in_flight", type=int, default=2,
                       help="transaction bundles each writer sends at once (1 = one after the other)")
        f.add_argument("--fhir_outage_seconds", "--fhir-outage-seconds", dest="fhir_outage_seconds",
                       type=float, default=None,
                       help="how long writes and identity lookups keep retrying transient failures "
                            "(refused/reset connections, timeouts, 5xx, 429) before dead-lettering; "
                            "default 900 on a stream, 600 in batch")
        f.add_argument("--max_fhir_requests_per_second", "--max-fhir-requests-per-second",
                       dest="max_fhir_requests_per_second", type=float, default=None,
                       help="cap on FHIR requests per second: the job's on a local run (its worker processes share "
                            "it), each worker process's on Dataflow / a Flink cluster (0 = no cap; "
                            "429s are throttled adaptively either way; default: the server's profile, "
                            "no cap; AWS HealthLake 10)")
        f.add_argument("--observation_cache_size", "--observation-cache-size", dest="observation_cache_size",
                       type=int, default=5000,
                       help="Observations each writer remembers (1 h) so updates skip the read (0 = off)")
        f.add_argument("--skip_preflight", "--skip-preflight", dest="skip_preflight", action="store_true",
                       help="do not check the FHIR server and the source at launch (e.g. when only the "
                            "workers can reach the server)")

        o = parser.add_argument_group("outputs")
        o.add_argument("--output", help="path prefix for Observation JSON lines (offline mode)")
        o.add_argument("--dead_letter", "--dead-letter", dest="dead_letter",
                       help="path prefix for dead-letter JSON lines")
        o.add_argument("--single_file_outputs", "--single-file-outputs", dest="single_file_outputs",
                       action="store_true", help="write exactly one file per output (small runs, demo)")
        o.add_argument("--max_dead_letter_fraction", "--max-dead-letter-fraction", dest="max_dead_letter_fraction",
                       type=float, default=None,
                       help="batch: exit 1 when a stage dead-letters more than this fraction (0-1) of its "
                            "input (default: data errors alone never fail the run)")
        o.add_argument("--summary_file", "--summary-file", dest="summary_file",
                       help="also write the final summary as JSON to this path")
        o.add_argument("--progress_seconds", "--progress-seconds", dest="progress_seconds", type=float,
                       default=10, help="local runs: a progress line (counts only) on stderr every N s (0 = off)")
        o.add_argument("--output_format", "--output-format", dest="output_format",
                       choices=("jsonl", "fhir-ndjson"), default="jsonl",
                       help="with --output: jsonl = Observation JSON lines; fhir-ndjson = Observation.ndjson, "
                            "Patient.ndjson, Device.ndjson for FHIR bulk import (--identity-mode Create ids)")


def writer_settings(opts, capabilities=None) -> WriterSettings:
    """The writer's bundle size, read batch, bundle type and rate cap: the options the user gave,
    else the server profile's (``transforms.fhir.server_profiles``; the launcher passes the
    CapabilityStatement preflight read, so ``auto`` can tell the product)."""
    return resolve_profile(getattr(opts, "fhir_server_kind", None) or "auto", capabilities,
                           opts.bundle_size, opts.read_batch_size, getattr(opts, "bundle_type", None),
                           opts.max_fhir_requests_per_second)
