"""``iomt-fhir run`` as a child process group, for whatever drives a streaming job from
outside: the stream tests, ``scripts/soak_stream`` and the stream load benchmark.

Why a process group: a streaming job never ends by itself, and on Flink ``[local]`` the job
server and the expansion service are JVMs the launcher starts; stopping the group ends them
all, so no JVM outlives its driver. The group's resident memory (every process in it) is
what a soak watches for growth.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple

IOMT_FHIR = pathlib.Path(sys.executable).with_name("iomt-fhir")


def _group_members(pgid: int) -> Iterator[Tuple[str, List[str]]]:
    """``(pid, /proc/pid/stat fields after the command)`` of every live process in group ``pgid``
    (fields: state, ppid, pgrp, ...; Linux /proc). A process that ends meanwhile is skipped."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                yield entry, fields
        except (OSError, IndexError, ValueError):
            continue


def group_rss_mb(pgid: int) -> float:
    """Resident memory (MiB) of every live process in process group ``pgid``."""
    total_kb = 0
    for pid, _ in _group_members(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                total_kb += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total_kb / 1024.0


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group ``pgid``."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in _group_members(pgid))  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class StreamJob:
    """``iomt-fhir run ARGS`` in its own process group, output to ``log_path``."""

    def __init__(self, args: Sequence[str], log_path, env: Optional[Mapping[str, str]] = None):
        self.log_path = pathlib.Path(log_path)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(IOMT_FHIR), "run", *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                     start_new_session=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        return group_rss_mb(self.proc.pid)

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.proc.pid)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL what lingers; returns once no process of it is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group's JVMs too (the job server may outlive a SIGTERMed launcher briefly)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        if not self.log.closed:
            self.log.close()
