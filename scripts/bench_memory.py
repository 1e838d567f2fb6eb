"""Benchmark: peak memory of a big local file backfill, over every process of the run.

Generates ``--messages N`` simulated messages spanning a year (the simulator's deterministic
archive, ``pipelines.simulator.devices.archive_messages``: a heart rate a minute per device,
blood pressure half-hourly, steps hourly; ``ceil(N / 552,000)`` devices so that N messages take
about 365 days), then runs ``iomt-fhir run --input F --output O --dead-letter D`` with no runner
flag: the launcher's default for a file backfill, the one the README recommends (FnApiRunner,
one worker process per core). The run is a child in its own process group; the resident set
of every process in it (launcher, workers) is sampled every 0.2 s and summed.

Last line: ``peak_rss_mb=<peak of the summed RSS> messages=N msgs_per_s=<N / wall seconds>``.
"""
import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MINUTES_PER_YEAR = 365 * 24 * 60
PER_DEVICE_MINUTE = 1 + 1 / 30 + 1 / 60  # heart rate, blood pressure, steps (see archive_messages)


def write_year(path: pathlib.Path, n: int) -> int:
    """Exactly ``n`` messages (fewer only if a year of the devices holds fewer), streamed."""
    from pipelines.simulator import devices as simulator

    devices = max(1, math.ceil(n / (MINUTES_PER_YEAR * PER_DEVICE_MINUTE)))
    minutes = min(MINUTES_PER_YEAR, math.ceil(n / (devices * PER_DEVICE_MINUTE)) + 1)
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for m in simulator.archive_messages(devices, minutes, "2026-01-01T00:00:00Z", 11):
            out.write(json.dumps(m, separators=(",", ":")) + "\n")
            count += 1
            if count >= n:
                break
    return count, devices, minutes


def group_rss_kb(pgid: int, each: dict = None) -> tuple:
    """(summed RSS in kB, process count) of the processes in process group ``pgid``; ``each``
    keeps every process's own peak (pid -> kB)."""
    total = count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5 of stat: the process group
                continue
            with open(f"/proc/{entry.name}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb = int(line.split()[1])
                        total += kb
                        count += 1
                        if each is not None and kb > each.get(entry.name, 0):
                            each[entry.name] = kb
                        break
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return total, count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files (default: a temporary dir)")
    p.add_argument("run_args", nargs="*", help="extra `iomt-fhir run` arguments (after --)")
    a = p.parse_args()
    work = pathlib.Path(a.keep or tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "messages.jsonl"
    t0 = time.perf_counter()
    stamp = work / "messages.count"
    if a.keep and path.exists() and stamp.exists() and stamp.read_text().split()[0] == str(a.messages):
        n, devices, minutes = (int(x) for x in stamp.read_text().split()[1:])  # --keep: reuse the file
    else:
        n, devices, minutes = write_year(path, a.messages)
        stamp.write_text(f"{a.messages} {n} {devices} {minutes}")
    print(f"messages={n} devices={devices} days={minutes / 1440:.0f} file={path.stat().st_size / 1e6:.0f} MB "
          f"(written in {time.perf_counter() - t0:.0f}s)", flush=True)
    out_dir = work / "out"
    if out_dir.exists():
        import shutil
        shutil.rmtree(out_dir)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())", "run",
           f"--device-mapping={ROOT / 'templates/devicecontent.json'}",
           f"--fhir-mapping={ROOT / 'templates/fhirmapping.json'}", f"--input={path}",
           f"--output={out_dir}/obs", f"--dead-letter={out_dir}/dead", "--progress-seconds=0", *a.run_args]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    peak = {"kb": 0, "procs": 0, "at": 0.0}
    each = {}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            kb, procs = group_rss_kb(proc.pid, each)
            if kb > peak["kb"]:
                peak.update(kb=kb, procs=procs, at=time.perf_counter() - started)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    lines = output.splitlines()
    for line in lines:
        if line.startswith(("iomt-fhir:", "summary:")):
            print(line[:200], flush=True)
    if proc.returncode not in (0, 1):
        sys.stderr.write("\n".join(lines[-30:]) + "\n")
        raise SystemExit(f"run failed ({proc.returncode})")
    observations = sum(1 for f in out_dir.glob("obs*") for line in open(f) if line.strip())
    print(f"wall {wall:.0f}s observations={observations} load average at start {load:.2f}, now "
          f"{os.getloadavg()[0]:.2f}; peak at {peak['at']:.0f}s over {peak['procs']} processes; each process's "
          f"own peak (MB): {', '.join(str(kb // 1024) for kb in sorted(each.values(), reverse=True))}")
    if not a.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    print(f"peak_rss_mb={peak['kb'] / 1024:.0f} messages={n} msgs_per_s={n / wall:.0f}")


if __name__ == "__main__":
    main()
