"""Runner names a user types, resolved before Beam parses them.

Beam 2.62 (the version whose Java jars are served here; see setup.py) no longer lists
``FnApiRunner`` among its known runner names, but it is the portable in-process batch
runner that needs nothing besides Python, and the README's examples use it. The alias
is resolved here, in the launcher, instead of patching Beam's private runner table.
"""
from typing import Any, Iterable, List, Optional

FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"

ALIASES = {"fnapirunner": FN_API_RUNNER}


def resolve_runner_aliases(argv: List[str]) -> List[str]:
    """``--runner=FnApiRunner`` (or ``--runner FnApiRunner``) -> Beam's fully qualified name."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--runner="):
            name = arg.split("=", 1)[1]
            out[i] = "--runner=" + ALIASES.get(name.lower(), name)
        elif arg == "--runner" and i + 1 < len(out):
            out[i + 1] = ALIASES.get(out[i + 1].lower(), out[i + 1])
    return out


#: Runners that read Beam's PortableOptions (``--output_executable_path`` among them);
#: DirectRunner hands some pipelines to Prism.
PORTABLE_RUNNER_KEYS = ("flink", "prism", "spark", "portable", "direct")


def runner_key(runner: Any) -> str:
    """'FlinkRunner', 'flink', 'apache_beam...flink_runner.FlinkRunner', or a runner object
    -> 'flink' (as Beam matches names); None -> ''. The one place runner names are parsed."""
    if runner is None:
        return ""
    name = runner if isinstance(runner, str) else type(runner).__name__
    key = name.rsplit(".", 1)[-1].lower()
    return key[:-len("runner")] if key.endswith("runner") else key


#: What runs a stream when the user names no runner. Beam's default, DirectRunner, decides at
#: run time, and for this stream job (the FHIR writer's processing-time flush timer) it runs
#: BundleBasedDirectRunner; naming it here makes that choice explicit, so the run can say it
#: in its first line instead of the user guessing. Batch keeps Beam's DirectRunner (Prism
#: when Beam judges the job fits it, else FnApiRunner; Beam's own log line names the one).
STREAMING_DEFAULT_RUNNER = "BundleBasedDirectRunner"


def with_default_runner(argv: List[str], streaming: bool) -> List[str]:
    """``argv`` plus ``--runner=BundleBasedDirectRunner`` for a stream that names no runner."""
    if streaming and not runner_in(argv):
        return list(argv) + ["--runner=" + STREAMING_DEFAULT_RUNNER]
    return list(argv)


def batch_workers(argv: List[str]) -> int:
    """Worker processes of a file backfill that names no runner: ``--direct_num_workers``, else
    one per core (``os.cpu_count()``); 0 also means one per core, as in Beam."""
    import os

    given = _value(list(argv), "--direct_num_workers")
    try:
        n = int(given) if given else 0
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 1)


def with_batch_workers(argv: List[str]) -> List[str]:
    """A file backfill that names no runner: ``FnApiRunner`` with one worker process per core.

    Why not Beam's default: DirectRunner (Prism, else FnApiRunner) runs the Python work in one
    process, one core. FnApiRunner's ``multi_processing`` mode splits every stage's elements
    over ``--direct_num_workers`` processes (file ranges: ``transforms.backfill``); measured
    here, 2 workers on 2 cores (README "Running at scale"). One worker: in this process."""
    if runner_in(argv):
        return list(argv)
    n = batch_workers(argv)
    out = _without(argv, "--direct_num_workers") + ["--runner=" + FN_API_RUNNER, f"--direct_num_workers={n}"]
    if not _given(out, "--direct_running_mode"):
        out.append("--direct_running_mode=" + ("multi_processing" if n > 1 else "in_memory"))
    return out


def local_worker_processes(argv: List[str]) -> int:
    """How many worker processes a local run of ``argv`` splits its work over: FnApiRunner (or
    DirectRunner) in ``multi_processing`` mode runs ``--direct_num_workers`` (``batch_workers``);
    anything else 1 here (Flink ``[local]`` with LOOPBACK runs the Python work in the launcher's
    process; a cluster's or Dataflow's worker count is not known at launch)."""
    argv = list(argv)
    if runner_in(argv) not in ("fnapi", "direct") or _value(argv, "--direct_running_mode") != "multi_processing":
        return 1
    return batch_workers(argv)


def _without(argv: List[str], flag: str) -> List[str]:
    """``argv`` without ``flag`` in its ``--flag=v`` and ``--flag v`` forms (also ``-`` for ``_``)."""
    names = {flag, flag.replace("_", "-")}
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif arg.split("=", 1)[0] not in names:
            out.append(arg)
    return out


def runner_line(argv: List[str], given: List[str]) -> str:
    """The run's first line: which runner runs it, and why when the user did not name it."""
    name = _value(list(argv), "--runner") or "DirectRunner"
    if runner_in(given):
        return f"iomt-fhir: runner: {name}"
    if name == FN_API_RUNNER:
        n = _value(list(argv), "--direct_num_workers")
        return (f"iomt-fhir: runner: FnApiRunner, {n} worker process{'es' if n != '1' else ''} "
                "(a file backfill, no --runner given; --direct_num_workers=N sets how many)")
    if runner_key(name) == "bundlebaseddirect":
        return f"iomt-fhir: runner: {name} (a stream, no --runner given)"
    return f"iomt-fhir: runner: {name} (no --runner given: Beam runs it on Prism when it can, else FnApiRunner)"


def runner_in(argv: List[str]) -> str:
    """The ``runner_key`` of the ``--runner`` an argv gives ('' when none)."""
    return runner_key(_value(list(argv), "--runner") or None)


def _given(argv: List[str], flag: str) -> bool:
    """Whether ``--flag`` was given, in Beam's ``--flag=v`` / ``--flag v`` forms (also ``-`` for ``_``)."""
    names = {flag, flag.replace("_", "-")}
    return any(arg in names or arg.split("=", 1)[0] in names for arg in argv)


def _value(argv: List[str], flag: str) -> str:
    value = ""
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def fill_cached_runner_artifacts(argv: List[str]) -> List[str]:
    """Point Beam at what scripts/setup cached, unless the user chose otherwise.

    Without this Beam downloads the Flink job server jar and the Prism binary at run time
    (Maven Central / GitHub releases), which machines without that access cannot do:

    - FlinkRunner: ``--flink_job_server_jar`` = the cached launcher jar. Not with
      ``--flink_submit_uber_jar``: that uploads the jar itself to a cluster, and the cached
      launcher is only a manifest over jars on this machine.
    - PrismRunner, and DirectRunner (which in Beam 2.62 hands to Prism the pipelines its
      FnApiRunner cannot run, e.g. unbounded reads): ``--prism_location`` = the cached binary.

    A flag the user gave always wins; with nothing cached the argv is returned unchanged.

    Also on the portable runners: the pipeline's ``--output`` would otherwise *also* set Beam's
    ``--output_executable_path`` (Beam parses each options view with argparse's prefix
    matching), and Flink/Prism would then write a jar to that path instead of running the job.
    """
    from pipelines.run import java_artifacts

    out = list(argv)
    key = runner_key(_value(out, "--runner")) or "direct"  # Beam's default runner
    if (key in PORTABLE_RUNNER_KEYS and _given(out, "--output")
            and not _given(out, "--output_executable_path")):
        out.append("--output_executable_path=")
    if key == "flink":
        jar = java_artifacts.flink_job_server_jar()
        if jar and not _given(out, "--flink_job_server_jar") and not _given(out, "--flink_submit_uber_jar"):
            out.append("--flink_job_server_jar=" + jar)
    elif key in ("prism", "direct"):
        binary = java_artifacts.prism_binary()
        if binary and not _given(out, "--prism_location"):
            out.append("--prism_location=" + binary)
    return out


#: Runners whose portable job service can run an EMBEDDED Java environment (Java transforms
#: inside its own JVM: the Flink job server for [local], the task managers on a cluster).
_EMBEDDED_JAVA_RUNNERS = ("flink",)


def java_environment_for(runner: Any) -> Optional[str]:
    """The ``--defaultEnvironmentType`` our expansion service gives Kafka IO on ``runner``.

    Beam's default, DOCKER, needs a Docker engine where the job runs. On Flink, EMBEDDED
    runs the Java read inside Flink itself (no Docker, no extra process; the job server's
    classpath, from scripts/setup-java, holds Kafka IO), and ``EVENTHUB_CONNECTION_STRING``
    is read from the job server's / task managers' environment. Elsewhere (Dataflow: its
    Java container; Prism, Spark) Beam's default is kept: None."""
    return "EMBEDDED" if runner_key(runner) in _EMBEDDED_JAVA_RUNNERS else None


#: The expansion-service flag that makes Kafka IO expand to Beam's unbounded-source read
#: (``Read.from(KafkaUnboundedSource)``) instead of its splittable-DoFn read.
DEPRECATED_READ_EXPERIMENT = "--experiments=use_deprecated_read"

#: Runners whose Kafka read must be the unbounded-source one to keep reading (see below).
_LEGACY_READ_RUNNERS = ("flink",)


def kafka_expansion_args(runner: Any = None) -> List[str]:
    """Command-line flags for the Kafka IO expansion service the launcher starts for ``runner``.

    Flink: ``--defaultEnvironmentType=EMBEDDED`` (``java_environment_for``) and
    ``--experiments=use_deprecated_read``. Why the second: Beam's portable Flink runner does
    not checkpoint and resume a splittable-DoFn read in streaming (apache/beam issues 20979
    and 22809, fixed for 2.76, whose jars are not served here), so Kafka IO's default read
    delivers the backlog present at start and then nothing, silently. The runner translates
    the older unbounded-source read natively: it keeps reading, commits offsets when a
    checkpoint completes and resumes from them. Beam 2.62's expansion service takes the
    experiment from *its own command line only* (it adds ``use_sdf_read`` to every request
    otherwise), so a pipeline option cannot ask for it: whoever starts the service must.
    Elsewhere (Dataflow checkpoints splittable reads; Prism, Spark): Beam's defaults, no flags."""
    args = []
    environment = java_environment_for(runner)
    if environment:
        args.append(f"--defaultEnvironmentType={environment}")
    if runner_key(runner) in _LEGACY_READ_RUNNERS:
        args.append(DEPRECATED_READ_EXPERIMENT)
    return args


def kafka_expansion_service(runner: Any = None):
    """The Kafka IO expansion service for ``runner`` when ``--kafka-expansion-service`` is not given.

    The jar scripts/setup-java cached (``pipelines.run.java_artifacts``), started by Beam with
    ``java -jar`` for the expansion and stopped after it, with ``kafka_expansion_args(runner)``.
    Without a cached jar: None, i.e. Beam's own default (which downloads its jar; on Flink
    the launcher then warns that the read stalls, ``pipelines.run.kafka_checks``). Chosen
    here, at launch, and passed down to the source."""
    from apache_beam.transforms.external import JavaJarExpansionService
    from pipelines.run import java_artifacts
    jar = java_artifacts.kafka_expansion_service_jar()
    if not jar:
        return None
    return JavaJarExpansionService(jar, append_args=kafka_expansion_args(runner))


#: Flink checkpoint interval (ms) when none is given: the launcher's for a Kafka read on
#: FlinkRunner and ``scripts/submit-flink``'s. Offsets are committed when a checkpoint
#: completes, so it bounds how much a restarted job re-reads (harmless: writes are idempotent)
#: and how far the consumer group's committed offsets trail the read.
FLINK_CHECKPOINT_INTERVAL_MS = 10000


def flink_kafka_args(argv: Iterable[str]) -> list:
    """Beam args a Kafka read on FlinkRunner needs and the user did not give.

    Kafka IO commits offsets (``commit_offset_in_finalize``) in a step that requires stable
    input, which Flink only provides with checkpointing: without it the job fails at start
    ("No checkpointing configured but pipeline uses @RequiresStableInput")."""
    argv = list(argv)
    if java_environment_for(runner_in(argv)) != "EMBEDDED":  # i.e. not Flink
        return []
    if _given(argv, "--checkpointing_interval"):
        return []
    return [f"--checkpointing_interval={FLINK_CHECKPOINT_INTERVAL_MS}"]


#: Flink's bundle time (ms) for a stream when none is given: the launcher's and so
#: ``scripts/submit-flink``'s. Beam's Flink runner closes a bundle of a Python stage after
#: ``--max_bundle_time_mills`` (1,000 by default), and a stage's output and the timers it set
#: leave only when its bundle closes; a reading crosses four Python stages (normalize, convert,
#: the writer's keyed step, its flush timer), so 1 s each was most of a reading's wait.
#: Measured (``scripts/bench_stream_load --rate 500 --duration 120``, this 2-core machine, quiet):
#: 1,000 ms p95 11.9 s, job CPU 71 s; 250 ms p95 8.4 s, 91 s; 100 ms p95 7.8 s, 106 s. 250 ms
#: takes most of the gain for under half the extra CPU (README "Latency of a live stream").
FLINK_STREAM_BUNDLE_MS = 250


def flink_stream_args(argv: Iterable[str]) -> list:
    """Beam args a stream on FlinkRunner gets unless the user gave them: a short bundle time
    (``FLINK_STREAM_BUNDLE_MS``), so a reading is not held a second per stage."""
    argv = list(argv)
    if runner_in(argv) != "flink" or _given(argv, "--max_bundle_time_mills"):
        return []
    return [f"--max_bundle_time_mills={FLINK_STREAM_BUNDLE_MS}"]

