"""The main job's graph: device messages -> measurements -> groups -> Observations -> sinks.

Assembly only: ``build`` wires the stages of ``transforms`` onto a pipeline; every step
lives there, and launching (options, checks, runner, summary) is ``pipelines.run.launch``.
Mappings arrive as text (read and validated at launch) and are shipped to the workers.
Every stage returns its dead letters as a tagged output; they are flattened into one.
"""
from typing import Dict

import apache_beam as beam
from apache_beam.transforms import window

from pipelines.options import IomtFhirOptions, writer_settings
from pipelines.run import progress
from pipelines.run.runners import kafka_expansion_service
from transforms.backfill import ReadNormalizeGroup, folds_locally
from transforms.fhir.client_setup import FhirClientFactory
from transforms.fhir.retry import outage_budget
from transforms.group import GroupMeasurements, window_for_mapping
from transforms.identities import ServerIdentityFactory
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.normalize import Normalize
from transforms.records.dead_letter import DEAD_LETTER_TAG
from transforms.sinks.bulk_ndjson import CreateModeIdsFactory
from transforms.sinks.fhir_server import DEFAULT_FLUSH_SECONDS, MappingMerge, WriteToFhir
from transforms.sources.device_events import ReadDeviceEvents, kafka_source_from_options
from transforms.to_observations import RESOURCES_TAG, ToObservations


def runner_of(p: beam.Pipeline):
    """The runner the pipeline's options name (None: Beam's default)."""
    from apache_beam.options.pipeline_options import StandardOptions
    return p.options.view_as(StandardOptions).runner if p.options else None


def build(p: beam.Pipeline, opts: IomtFhirOptions, device_text: str, fhir_text: str,
          streaming: bool = False) -> Dict[str, beam.PCollection]:
    """Wire the pipeline onto ``p``; returns its main PCollections (for tests and sinks)."""
    kafka = kafka_source_from_options(opts)
    reader = ReadDeviceEvents(opts.input, opts.input_format, opts.pubsub_subscription, kafka,
                              kafka_expansion_service(runner_of(p)) if kafka else None)
    fhir_mapping = load_fhir_mapping(fhir_text).ensure_valid()
    window_seconds = opts.window_seconds or window_for_mapping(fhir_mapping)
    out = {}
    if opts.input and not streaming:
        # Files, batch: read, normalize and pre-combine a whole file range per DoFn call
        # (transforms.backfill); the same groups as the element path below, far fewer elements.
        # To JSON files: converted and folded by Observation id there too, so no shuffle holds
        # every Observation of the archive (memory: README "Running at scale").
        fold = (opts.output and getattr(opts, "output_format", None) != "fhir-ndjson" and not opts.fhir_url
                and folds_locally(window_seconds, window_for_mapping(fhir_mapping)))
        read = p | "ReadNormalizeGroup" >> ReadNormalizeGroup(
            opts.input, opts.input_format, device_text, window_seconds,
            fold_fhir_mapping=fhir_text if fold else None)
        dead_letters = [read[DEAD_LETTER_TAG]]
        if fold:
            out["observations"] = read["observations"]
            out["dead_letter"] = tuple(dead_letters) | "AllDeadLetters" >> beam.Flatten()
            _ = out["dead_letter"] | "CountDeadLetters" >> beam.Map(progress.tally_dead_letter)
            return out
        groups = read["groups"]
    else:
        read = p | "Read" >> reader
        normalized = read["events"] | "Normalize" >> Normalize(device_text)
        groups = normalized.measurements | "Group" >> GroupMeasurements(
            window_seconds, opts.allowed_lateness_seconds, opts.early_firing_seconds if streaming else 0,
            regroup_late=streaming)
        out["measurements"] = normalized.measurements
        dead_letters = [normalized[DEAD_LETTER_TAG], read[DEAD_LETTER_TAG]]
    identity = None
    if opts.fhir_url:
        settings = writer_settings(opts)
        client_factory = FhirClientFactory(opts.fhir_url, opts.fhir_auth,
                                           outage_budget(opts.fhir_outage_seconds, streaming),
                                           settings.max_requests_per_second)
        identity = ServerIdentityFactory(client_factory, opts.identity_mode, opts.device_identifier_system,
                                         opts.identity_cache_seconds)
    elif getattr(opts, "output_format", None) == "fhir-ndjson":  # bulk files: Create mode's ids, no server
        identity = CreateModeIdsFactory(opts.device_identifier_system)
    converted = groups | "ToObservations" >> ToObservations(fhir_text, identity)
    dead_letters.append(converted[DEAD_LETTER_TAG] | "DeadLetterWindow" >> beam.WindowInto(window.GlobalWindows()))
    out.update(write_items=converted.observations, resources=converted[RESOURCES_TAG])
    if opts.fhir_url:
        written = converted.observations | "WriteFhir" >> WriteToFhir(
            client_factory, MappingMerge(fhir_mapping),
            bundle_size=settings.bundle_size, read_batch_size=settings.read_batch_size,
            bundle_type=settings.bundle_type,
            max_in_flight=opts.max_in_flight,
            observation_cache_size=opts.observation_cache_size,
            flush_seconds=DEFAULT_FLUSH_SECONDS if streaming else 0.0)
        out["outcomes"] = written.outcomes
        _ = written.outcomes | "CountOutcomes" >> beam.Map(progress.tally_outcome)
        dead_letters.append(written[DEAD_LETTER_TAG] | "WriteDeadLetterWindow" >> beam.WindowInto(
            window.GlobalWindows()))
    out["dead_letter"] = tuple(dead_letters) | "AllDeadLetters" >> beam.Flatten()
    _ = out["dead_letter"] | "CountDeadLetters" >> beam.Map(progress.tally_dead_letter)
    return out

