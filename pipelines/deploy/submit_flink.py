"""``scripts/submit-flink``: submit the pipeline to a remote Flink cluster.

Why a wrapper: a Flink deployment needs a handful of Beam/Flink options that are easy to get
wrong and whose defaults do not fit a long-running IoMT stream:

* ``--flink_master HOST:PORT`` (the JobManager's REST port, 8081 by default) and the Flink
  version of Beam's job server that matches the cluster (``--flink-version``: 1.19 by default, one of
  the installed Beam's; the job server is of the installed Beam's version);
* checkpointing: Kafka / Event Hubs offsets are committed when a checkpoint finalizes
  (``commit_offset_in_finalize``), so without checkpoints a restarted job re-reads from the
  group's old offset (harmless, writes are idempotent, but slow); on by default here (10 s, ``pipelines.run.runners.FLINK_CHECKPOINT_INTERVAL_MS``);
* the state backend (``rocksdb`` for windows holding an hour of readings of many devices);
* the Python SDK environment: on a cluster the default (Docker) rarely works; ``EXTERNAL``
  points Flink's task managers at a Beam worker pool beside each of them (the image built
  from ``deploy/dataflow/Dockerfile`` started with ``--worker_pool`` has this package installed).

Options Beam's Python side does not know (``--checkpointing_interval``, ``--state_backend`` ...)
are passed to the Java job server as pipeline options (Beam keeps unknown options for portable
runners), where Flink's runner reads them. Everything after ``--`` is ``iomt-fhir run``'s.
No secret is ever an argument: ``EVENTHUB_CONNECTION_STRING`` must be set where the Kafka
IO Java transform runs (see README "Running at scale").
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import List, Optional

from pipelines.run.runners import FLINK_CHECKPOINT_INTERVAL_MS

#: The Flink both Beams run here support (2.62: 1.17-1.19; 2.77: 1.19-2.2) and the one run here
#: (scripts/setup-java's beam-runners-flink-1.19); the cluster must run the version given.
DEFAULT_FLINK_VERSION = "1.19"


def flink_versions() -> List[str]:
    """The Flink versions the installed Beam publishes a runner for (Beam's own list)."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions
    return list(FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS)
DEFAULT_WORKER_POOL = "localhost:50000"  # Beam's worker pool port, as a sidecar of each task manager


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="submit-flink", description="Submit iomt-fhir to a remote Flink cluster.",
        epilog="Everything after -- goes to 'iomt-fhir run' (mappings, source, --fhir-url, --dead-letter ...).")
    p.add_argument("--flink_master", "--flink-master", required=True, metavar="HOST:PORT",
                   help="the JobManager's REST address (e.g. flink-jobmanager:8081)")
    p.add_argument("--flink-version", default=DEFAULT_FLINK_VERSION, choices=flink_versions(),
                   help=f"the cluster's Flink version, one the installed Beam runs on (default {DEFAULT_FLINK_VERSION})")
    p.add_argument("--parallelism", type=int, help="job parallelism (default: the cluster's)")
    p.add_argument("--max-parallelism", type=int, help="max parallelism (key groups; fixes rescaling limits)")
    p.add_argument("--checkpointing-interval", type=int, default=FLINK_CHECKPOINT_INTERVAL_MS, metavar="MS",
                   help=f"checkpoint every MS milliseconds (default {FLINK_CHECKPOINT_INTERVAL_MS}; 0 = off); Kafka offsets are "
                        "committed on checkpoints")
    p.add_argument("--state-backend", choices=("rocksdb", "filesystem"),
                   help="Beam state backend (default: the cluster's state.backend); needs "
                        "--state-backend-storage-path")
    p.add_argument("--state-backend-storage-path", metavar="URI",
                   help="checkpoint storage for the state backend (s3://, hdfs://, file://)")
    p.add_argument("--environment-type", default="EXTERNAL", choices=("EXTERNAL", "PROCESS", "DOCKER"),
                   help="how task managers run the Python SDK harness (default EXTERNAL: a worker pool)")
    p.add_argument("--environment-config", default=None,
                   help=f"EXTERNAL: worker pool address (default {DEFAULT_WORKER_POOL}); PROCESS: "
                        '\'{"command": "/opt/apache/beam/boot"}\'; DOCKER: the SDK image')
    p.add_argument("--uber-jar", action="store_true",
                   help="upload one jar through Flink's REST API instead of running Beam's job server here "
                        "(needs Beam's shaded job-server jar; Beam downloads it)")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not submit")
    return p


def build_argv(args: argparse.Namespace, run_args: List[str]) -> List[str]:
    """The ``iomt-fhir run`` arguments for these submit options."""
    if args.checkpointing_interval < 0:
        raise SystemExit("--checkpointing-interval must be >= 0")
    if args.state_backend and not args.state_backend_storage_path:
        raise SystemExit("--state-backend needs --state-backend-storage-path (Beam's Flink runner refuses it)")
    out = ["--runner=FlinkRunner", f"--flink_master={args.flink_master}", f"--flink_version={args.flink_version}",
           f"--environment_type={args.environment_type}"]
    config = args.environment_config or (DEFAULT_WORKER_POOL if args.environment_type == "EXTERNAL" else None)
    if config:
        out.append(f"--environment_config={config}")
    if args.parallelism:
        out.append(f"--parallelism={args.parallelism}")
    if args.max_parallelism:
        out.append(f"--max_parallelism={args.max_parallelism}")
    if args.checkpointing_interval:
        out.append(f"--checkpointing_interval={args.checkpointing_interval}")
    if args.state_backend:
        out.append(f"--state_backend={args.state_backend}")
    if args.state_backend_storage_path:
        out.append(f"--state_backend_storage_path={args.state_backend_storage_path}")
    if args.uber_jar:
        out.append("--flink_submit_uber_jar")
    return out + run_args


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, run_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser().parse_args(own)
    run_argv = build_argv(args, run_args)
    if args.dry_run:
        print("iomt-fhir run " + " ".join(shlex.quote(a) for a in run_argv))
        return 0
    from pipelines.run import launch

    return launch.main(run_argv)


if __name__ == "__main__":
    sys.exit(main())
