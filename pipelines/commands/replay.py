"""``iomt-fhir replay``: re-drive dead letters from where they failed, after the cause is fixed.

Each record goes back in at its own stage, through the same functions the pipeline's
DoFns call (``normalize_event``, ``to_observations.convert``, ``ObservationWriter``), so a
replay cannot drift from what a run would do, and no DoFn is driven by hand:

* ``normalization`` / ``read`` -- the raw message (body, properties, system properties,
  ingestion time) through the whole chain: normalize, group, convert, write; a ``read``
  record naming a file that could not be read holds no message: it is kept (failed
  again) and the summary says to run that file again once it is fixed;
* ``grouping`` / ``fhir_conversion`` / ``identity`` -- the group's measurements, from
  grouping on;
* ``fhir_write`` -- the Observation straight to the writer, which reads what the server
  holds now and merges the record's data into it (``If-Match``); a record without its
  measurement group (written by an older version) is only written where nothing exists.

Writes are the pipeline's create-or-merge, so replaying the same records twice writes
nothing the second time. What fails again is written, in the same record shape, under a
new prefix (never into the files being replayed) and the summary says how many of each
stage were recovered. Exit 0 all recovered, 1 some failed again, 2 refused at launch.

Why in this process, not as a Beam job: dead letters are a small remainder of a run, and
an operator replays them right after a fix and wants the answer on the terminal; the
records are read as a stream and only measurements are held (grouped by device and type).
"""
import collections
import datetime
import json
import logging
import shlex
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

from transforms.fhir.auth import AUTH_KINDS
from transforms.fhir.identity import MODES as IDENTITY_MODES
from transforms.records.dead_letter import (STAGE_FHIR_CONVERSION, STAGE_FHIR_WRITE, STAGE_GROUPING, STAGE_IDENTITY,
                                           STAGE_NORMALIZATION, STAGE_READ, STAGES)

log = logging.getLogger(__name__)

MESSAGE_STAGES = (STAGE_READ, STAGE_NORMALIZATION)
MEASUREMENT_STAGES = (STAGE_GROUPING, STAGE_FHIR_CONVERSION, STAGE_IDENTITY)
WRITE_STAGES = (STAGE_FHIR_WRITE,)
assert MESSAGE_STAGES + MEASUREMENT_STAGES + WRITE_STAGES == STAGES  # every stage has its way back


def dead_letter_glob(prefix: str, streaming: bool = False) -> str:
    """Where a run's dead letters are: batch writes ``PREFIX*.jsonl`` files, a stream
    windowed files in the directory ``PREFIX/``."""
    return f"{prefix.rstrip('/')}/*" if streaming else f"{prefix}*"


def replay_hint(opts, streaming: bool = False) -> str:
    """The command that replays a run's dead letters (same mappings and destination)."""
    if not getattr(opts, "dead_letter", None):
        return ""
    parts = ["iomt-fhir", "replay", "--dead-letter", dead_letter_glob(opts.dead_letter, streaming),
             "--device-mapping", opts.device_mapping, "--fhir-mapping", opts.fhir_mapping]
    if getattr(opts, "fhir_url", None):
        parts += ["--fhir-url", opts.fhir_url]
        if opts.fhir_auth and opts.fhir_auth != "none":
            parts += ["--fhir-auth", opts.fhir_auth]
        if opts.identity_mode != "Create":
            parts += ["--identity-mode", opts.identity_mode]
        if opts.device_identifier_system:
            parts += ["--device-identifier-system", opts.device_identifier_system]
        return " ".join(shlex.quote(p) for p in parts)
    return " ".join(shlex.quote(p) for p in parts) + " --fhir-url URL"


# -- reading ---------------------------------------------------------------------------------
def read_records(pattern: str) -> Iterator[Tuple[str, int, Optional[dict]]]:
    """``(file, line, record or None if the line is not a JSON object)`` of every matching file."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.launch_errors import LaunchError

    try:
        # also the files of matching folders: a stream's dead letters are windowed files in PREFIX/
        found = FileSystems.match([pattern, pattern.rstrip("/") + "/*"])
        files = sorted({m.path for r in found for m in r.metadata_list if not _is_local_dir(m.path)})
    except Exception as e:
        raise LaunchError(f"--dead-letter {pattern!r}: cannot list files: {type(e).__name__}") from None
    if not files:
        raise LaunchError(f"--dead-letter {pattern!r} matches no file (quote the glob, e.g. "
                          "--dead-letter 'out/dead-letter*')")
    for path in files:
        try:
            handle = FileSystems.open(path)
        except (IsADirectoryError, OSError):
            continue
        with handle:
            for number, raw in enumerate(handle, 1):
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                yield path, number, record if isinstance(record, dict) and "stage" in record else None


def _is_local_dir(path: str) -> bool:
    import os
    return "://" not in path and os.path.isdir(path)


def default_new_prefix(pattern: str, now: Optional[datetime.datetime] = None) -> str:
    """A fresh prefix beside the replayed files, outside what the pattern matches: in the
    folder above the pattern's first glob character."""
    import posixpath

    now = now or datetime.datetime.now(datetime.timezone.utc)
    fixed = pattern
    for ch in "*?[":
        fixed = fixed.split(ch, 1)[0]
    head = posixpath.dirname(fixed.rstrip("/")) or "."
    return f"{head}/replayed-{now.strftime('%Y%m%dT%H%M%SZ')}/dead-letter"


def matched_by(pattern: str, new_prefix: str) -> bool:
    """Would replaying ``pattern`` again read what this replay writes under ``new_prefix``?"""
    import fnmatch
    import posixpath

    candidates = [f"{new_prefix}.jsonl"]
    parent = posixpath.dirname(new_prefix)
    while parent and parent not in ("/", "."):
        candidates.append(parent)
        parent = posixpath.dirname(parent)
    return any(fnmatch.fnmatch(c, pattern) for c in candidates)


# -- the replay ------------------------------------------------------------------------------
class StageCount:
    __slots__ = ("records", "failed")

    def __init__(self):
        self.records = 0
        self.failed = 0

    @property
    def recovered(self) -> int:
        return self.records - self.failed


class ReplayResult:
    def __init__(self):
        self.stages: Dict[str, StageCount] = collections.defaultdict(StageCount)
        self.written: Dict[str, int] = collections.Counter()
        self.failures: List[dict] = []  # new dead-letter records
        self.unreadable = 0
        self.files_to_rerun: Set[str] = set()

    @property
    def failed_records(self) -> int:
        return sum(s.failed for s in self.stages.values()) + self.unreadable

    def lines(self, new_prefix: str) -> List[str]:
        order = [s for s in STAGES if s in self.stages] + sorted(set(self.stages) - set(STAGES))
        total = sum(self.stages[s].records for s in order)
        out = [f"replay: {total} dead-letter record(s)"
               + (f", {self.unreadable} unreadable line(s)" if self.unreadable else "")]
        out.append("recovered: " + (", ".join(f"{s} {self.stages[s].recovered}/{self.stages[s].records}"
                                              for s in order) or "nothing to replay"))
        out.append("written: " + " ".join(f"{k}={self.written.get(k, 0)}" for k in ("created", "updated", "unchanged")))
        if self.failures:
            kinds = collections.Counter((r["stage"], r["error_type"]) for r in self.failures)
            out.append(f"failed again: {len(self.failures)} record(s) in {new_prefix}.jsonl: "
                       + ", ".join(f"{s}/{t}={n}" for (s, t), n in sorted(kinds.items())))
        else:
            out.append("failed again: none")
        if self.files_to_rerun:
            out.append(f"{len(self.files_to_rerun)} file(s) could not be read (stage read): run them again "
                       "with iomt-fhir run --input FILE once they are fixed")
        return out


def _key(measurement_json: dict) -> str:
    return json.dumps(measurement_json, sort_keys=True, default=str)


class Replayer:
    """Re-drives records through the pipeline's own steps; see the module docstring."""

    def __init__(self, device_text: str, fhir_text: str, identity_factory, writer):
        from transforms.mapping.device_templates import load_device_mapping
        from transforms.identities import OfflineIdentity
        from transforms.mapping.fhir_templates import load_fhir_mapping

        self.device_mapping = load_device_mapping(device_text).ensure_valid()
        self.fhir_mapping = load_fhir_mapping(fhir_text).ensure_valid()
        self.identity = (identity_factory or OfflineIdentity)()
        self.writer = writer

    def replay(self, records: Iterable[Tuple[str, int, Optional[dict]]]) -> ReplayResult:
        from transforms.fhir.writer import WriteItem
        from transforms.group import group_key
        from transforms.mapping.measurement import Measurement
        from transforms.normalize import normalize_event
        from transforms.records.dead_letter import dead_letter, observation_group_from_json
        from transforms.records.device_event import DeviceEvent
        from transforms.to_observations import FAILED, WRITE, convert, group_dead_letter

        result = ReplayResult()
        origin: List[str] = []  # record index -> its stage
        failed: Set[int] = set()
        by_key: Dict[tuple, List[Tuple[Measurement, int]]] = collections.defaultdict(list)
        writes: List[Tuple[object, Set[int]]] = []

        def fail_again(index: Optional[int], record: dict) -> None:
            result.failures.append(record)
            if index is not None:
                failed.add(index)

        for _path, _line, record in records:
            if record is None:
                result.unreadable += 1
                continue
            stage = record.get("stage")
            index = len(origin)
            origin.append(stage)
            result.stages[stage].records += 1
            payload = record.get("payload")
            try:
                if stage == "read" and isinstance(payload, dict) and "body" not in payload:
                    # a file (or a record of it) that could not be read: nothing to re-drive
                    # here; the summary says to run the file again once it is fixed
                    result.files_to_rerun.add(str(payload.get("file")))
                    fail_again(index, record)
                elif stage in MESSAGE_STAGES:
                    event = DeviceEvent(body=payload["body"], properties=payload.get("properties"),
                                        system_properties=payload.get("system_properties"),
                                        ingestion_time=payload.get("ingestion_time"),
                                        is_envelope=bool(payload.get("is_envelope")))
                    try:
                        measurements = normalize_event(self.device_mapping, event)
                    except Exception as e:  # as the pipeline: the message is dead-lettered again
                        fail_again(index, dead_letter(STAGE_NORMALIZATION, e, event.payload()))
                        measurements = ()
                    for m in measurements:
                        by_key[group_key(m)].append((m, index))
                elif stage in MEASUREMENT_STAGES:
                    for obj in payload:
                        m = Measurement.from_json(obj)
                        by_key[group_key(m)].append((m, index))
                elif stage in WRITE_STAGES:
                    attrs = record.get("attributes") or {}
                    item = WriteItem(payload, attrs.get("template_name"),
                                     observation_group_from_json(attrs.get("group")))
                    writes.append((item, {index}))
                else:
                    fail_again(index, record)  # a stage this version does not know: kept as it was
            except Exception as e:  # a record whose payload is not what its stage stores
                fail_again(index, dead_letter(stage or "read", e, payload, record.get("attributes")))

        for key, pairs in by_key.items():
            sources: Dict[str, Set[int]] = collections.defaultdict(set)
            for m, index in pairs:
                sources[_key(m.to_json())].add(index)
            measurements = [m for m, _ in pairs]
            for kind, out in convert(self.fhir_mapping, self.identity, measurements):
                if kind == FAILED:
                    record = group_dead_letter(*out)
                    hit = set().union(*(sources.get(_key(obj), set()) for obj in record["payload"]))
                    fail_again(None, record)
                    failed.update(hit)
                elif kind == WRITE:
                    group = out.group
                    hit = {i for m, i in pairs if group is None or group.start <= m.occurrence_time <= group.end}
                    writes.append((out, hit or {i for _, i in pairs}))

        if writes:
            self._write(writes, result, fail_again, failed)
        for index in failed:
            result.stages[origin[index]].failed += 1
        return result

    def _write(self, writes, result, fail_again, failed) -> None:
        from transforms.records.dead_letter import write_failure
        from transforms.fhir.writer import FAILED

        outcomes = self.writer.write([item for item, _ in writes])
        for (item, sources), outcome in zip(writes, outcomes):
            if outcome.outcome == FAILED:
                fail_again(None, write_failure(outcome.error, item.observation, item.template_name, item.group))
                failed.update(sources)
            else:
                result.written[outcome.outcome] += 1


class _MergeOrRefuse:
    """The mapping's merge; a record without its group cannot be merged into what exists."""

    def __init__(self, merge):
        self.merge = merge

    def __call__(self, item, existing):
        if item.group is None or item.template_name is None:
            raise ValueError("the dead-letter record has no measurement group (written by an older "
                             "version): it cannot be merged into the Observation the server holds")
        return self.merge(item, existing)


def write_records(prefix: str, records: List[dict]) -> str:
    from apache_beam.io.filesystems import FileSystems

    path = f"{prefix}.jsonl"
    with FileSystems.create(path) as f:
        for r in records:
            f.write((json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8"))
    return path


# -- the command -----------------------------------------------------------------------------
def register(sub) -> None:
    r = sub.add_parser(
        "replay", help="re-drive dead letters from the stage where they failed",
        description="Re-drive dead-letter records after fixing a mapping, the data or the server: "
                    "normalization/read records as the raw message through the whole pipeline, "
                    "grouping/fhir_conversion/identity records as their measurements, fhir_write "
                    "records as their Observation merged into what the server holds now. What fails "
                    "again goes to a new dead-letter prefix. Replaying twice writes nothing the second "
                    "time. Exit 0 all recovered, 1 some failed again, 2 refused.")
    r.add_argument("--dead-letter", action="append", required=True, metavar="PATTERN",
                   help="the dead-letter files to replay (quote the glob: 'out/dead-letter*'); given a "
                        "second time: the prefix for what fails again (default: "
                        "DIR/replayed-UTCTIME/dead-letter)")
    r.add_argument("--device-mapping", required=True)
    r.add_argument("--fhir-mapping", required=True)
    r.add_argument("--fhir-url", required=True)
    r.add_argument("--fhir-auth", default="none", choices=AUTH_KINDS,
                   help="credentials come from the environment (see README)")
    r.add_argument("--identity-mode", default="Create", choices=IDENTITY_MODES)
    r.add_argument("--device-identifier-system", default="")
    r.add_argument("--identity-cache-seconds", type=float, default=None,
                   help="as for 'run' (default: 7200 sliding; 60 absolute for LookupByDeviceUse*)")
    r.add_argument("--stage", action="append", choices=STAGES, help="only records of this stage (repeatable)")
    r.add_argument("--error-type", action="append", help="only records of this error type (repeatable)")
    r.add_argument("--fhir-outage-seconds", type=float, default=None,
                   help="retry transient failures (refused, reset, timeouts, 429, 5xx) this long before a "
                        "record fails again (default: the client's short budget, at most 2 minutes)")
    r.add_argument("--bundle-size", type=int, default=50)
    r.add_argument("--skip-preflight", action="store_true")
    r.set_defaults(func=cmd_replay)


def cmd_replay(args) -> int:
    from pipelines.launch_errors import LaunchError, check_http_url
    from pipelines.run import preflight
    from pipelines.run.mappings import InvalidMappings, check_mappings, read_mapping
    from transforms.fhir.client_setup import FhirClientFactory
    from transforms.fhir.writer import MappingMerge, ObservationWriter
    from transforms.identities import ServerIdentityFactory
    from transforms.mapping.fhir_templates import load_fhir_mapping

    if len(args.dead_letter) > 2:
        raise LaunchError("--dead-letter: give the files to replay, and at most once more the new prefix")
    pattern = args.dead_letter[0]
    new_prefix = args.dead_letter[1] if len(args.dead_letter) > 1 else default_new_prefix(pattern)
    if args.bundle_size < 1:
        raise LaunchError("--bundle-size must be at least 1")
    if matched_by(pattern, new_prefix):
        raise LaunchError(f"the new dead-letter prefix {new_prefix} is matched by {pattern!r}: "
                          "choose one outside it")
    device_text = read_mapping("--device-mapping", args.device_mapping)
    fhir_text = read_mapping("--fhir-mapping", args.fhir_mapping)
    try:
        check_mappings(device_text, fhir_text, args.device_mapping, args.fhir_mapping)
    except InvalidMappings as e:
        raise LaunchError(str(e)) from None
    check_http_url("--fhir-url", args.fhir_url)
    if not args.skip_preflight:
        preflight.check_fhir(args.fhir_url, args.fhir_auth, args.identity_mode, args.device_identifier_system)

    stages, types = set(args.stage or ()), set(args.error_type or ())
    records = ((p, n, r) for p, n, r in read_records(pattern)
               if r is None or ((not stages or r.get("stage") in stages)
                                and (not types or r.get("error_type") in types)))
    if args.fhir_outage_seconds is not None and args.fhir_outage_seconds < 0:
        raise LaunchError("--fhir-outage-seconds must be at least 0")
    client_factory = FhirClientFactory(args.fhir_url, args.fhir_auth, args.fhir_outage_seconds)
    identity = ServerIdentityFactory(client_factory, args.identity_mode, args.device_identifier_system,
                                     args.identity_cache_seconds)
    client = client_factory()
    writer = ObservationWriter(client, _MergeOrRefuse(MappingMerge(load_fhir_mapping(fhir_text))),
                               bundle_size=args.bundle_size, read_batch_size=max(args.bundle_size, 500))
    try:
        result = Replayer(device_text, fhir_text, identity, writer).replay(records)
    finally:
        writer.close()
        client.close()
    if result.failures:
        write_records(new_prefix, result.failures)
    for line in result.lines(new_prefix):
        print(line, file=sys.stderr)
    return 1 if result.failed_records else 0
