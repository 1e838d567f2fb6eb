"""Benchmark: the whole pipeline (files -> Observations to files) vs a trivial Beam pipeline.

Both run on ``FnApiRunner`` in this process over the SAME file of simulated device
messages (``scripts/simulate_devices.py``'s archive, the example mappings in ``templates/``):

- baseline: ReadFromText -> json.loads -> timestamp -> FixedWindows(3600) ->
  GroupByKey by (device, type) -> count -> WriteToText. One element per message
  crosses the shuffle: the framework's own cost per message.
- ours: ``launch.main`` with ``--output`` (normalize with the device mapping,
  group, FHIR mapping, fold one Observation per id, write JSON lines) and ``--dead-letter``.

The sides alternate, best of ``--repeat`` counts. Rates are messages per CPU second
of this process (FnApiRunner runs the job in it): on a machine shared with other work,
wall time mostly measures the neighbours; wall times are printed too. Also printed (not in the ratio):
the same run into the local FHIR server (``scripts/fhir-server``, started here) and
wall time and peak RSS of ours in a child process at each ``--scale`` (cost should
grow linearly, memory should not grow with the archive).
Last line: ``ratio=<ours/baseline> msgs_per_s=<ours> baseline_msgs_per_s=<baseline>``.
"""
import argparse
import datetime as _dt
import gc
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import apache_beam as beam  # noqa: E402
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402
from apache_beam.transforms import window  # noqa: E402

DEVICES = 200
MAPPINGS = ROOT / "templates"


def write_messages(path: pathlib.Path, n: int) -> int:
    """At least ``n`` simulated messages (whole minutes of ``DEVICES`` devices), streamed to ``path``."""
    from pipelines.simulator import devices as simulator

    per_minute = DEVICES * 1.06  # heart rate every minute, blood pressure / steps / weight less often
    minutes = int(n / per_minute) + 1
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        while count < n:  # top up when the estimate fell short
            for m in simulator.archive_messages(DEVICES, minutes, "2026-01-05T00:00:00Z", 7):
                out.write(json.dumps(m, separators=(",", ":")) + "\n")
                count += 1
            minutes = max(1, int((n - count) / per_minute) + 1)
    return count


def _baseline_key_time(line: str):
    body = json.loads(line)
    if isinstance(body, list):
        first = body[0]
        return (first["deviceId"], "steps"), float(first["epochSeconds"])
    kind = next(iter(body))
    when = _dt.datetime.fromisoformat(body["endDate"].replace("Z", "+00:00")).timestamp()
    return (body["deviceId"], kind), when


def run_baseline(path: pathlib.Path, out_prefix: str):
    t0, c0 = time.perf_counter(), time.process_time()
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (p
             | beam.io.ReadFromText(str(path))
             | "Parse" >> beam.Map(_baseline_key_time)
             | "Timestamp" >> beam.Map(lambda kt: window.TimestampedValue((kt[0], 1), kt[1]))
             | beam.WindowInto(window.FixedWindows(3600))
             | beam.GroupByKey()
             | "Count" >> beam.MapTuple(lambda k, ones: f"{k[0]},{k[1]},{sum(1 for _ in ones)}")
             | beam.io.WriteToText(out_prefix))
    return time.perf_counter() - t0, time.process_time() - c0


def ours_args(path, out_dir, extra=()):
    return ["--runner=FnApiRunner", f"--device-mapping={MAPPINGS / 'devicecontent.json'}",
            f"--fhir-mapping={MAPPINGS / 'fhirmapping.json'}", f"--input={path}",
            f"--dead-letter={out_dir}/dead", *extra]


def run_ours(path: pathlib.Path, out_dir: str, extra=()):
    from pipelines.run import launch

    t0, c0 = time.perf_counter(), time.process_time()
    rc = launch.main(ours_args(path, out_dir, extra))
    if rc != 0:
        raise SystemExit(f"pipeline exited {rc}")
    return time.perf_counter() - t0, time.process_time() - c0


def count_lines(pattern_dir: str, prefix: str) -> int:
    return sum(sum(1 for line in open(f) if line.strip())
               for f in pathlib.Path(pattern_dir).glob(prefix + "*"))


def child_run(path: str, out_dir: str) -> None:
    """One run of ours in a fresh process: the parent measures its peak RSS."""
    wall, cpu = run_ours(pathlib.Path(path), out_dir, [f"--output={out_dir}/obs"])
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu}))


def measure_scale(n: int, work: pathlib.Path) -> dict:
    path = work / f"scale-{n}.jsonl"
    count = write_messages(path, n)
    out_dir = tempfile.mkdtemp(dir=work)
    proc = subprocess.Popen([sys.executable, __file__, "--child-run", str(path), out_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"scale run {n} failed ({proc.returncode})")
    times = json.loads(out.decode().strip().splitlines()[-1])
    path.unlink()
    return {"messages": count, "seconds": times["seconds"], "cpu_seconds": times["cpu_seconds"], "peak_rss_mb": usage.ru_maxrss / 1024,
            "observations": count_lines(out_dir, "obs")}


def run_fhir(path: pathlib.Path, work: pathlib.Path, n: int) -> str:
    """Ours into the local FHIR server started here (Create mode): time and msgs/s."""
    import socket

    import requests

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen([str(ROOT / "scripts/fhir-server"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        for _ in range(600):
            try:
                if requests.get(base + "/metadata", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None:
                return "FHIR server did not start"
            time.sleep(0.2)
        out_dir = tempfile.mkdtemp(dir=work)
        wall, cpu = run_ours(path, out_dir, [f"--fhir-url={base}", "--identity-mode=Create"])
        total = requests.get(base + "/Observation", params={"_summary": "count"}, timeout=30).json().get("total")
        return (f"wall {wall:.2f}s cpu {cpu:.2f}s (this process; the server is another) "
                f"{n / wall:,.0f} msgs/s wall, Observations on server={total}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--scale", type=int, nargs="*", default=[100_000, 1_000_000],
                   help="message counts for the time / peak-memory runs (none to skip)")
    p.add_argument("--no-fhir", action="store_true", help="skip the run into the local FHIR server")
    p.add_argument("--child-run", nargs=2, metavar=("INPUT", "OUT_DIR"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child_run:
        return child_run(*a.child_run)
    import logging
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        work = pathlib.Path(tmp)
        path = work / "messages.jsonl"
        n = write_messages(path, a.messages)
        print(f"messages={n} file={path.stat().st_size / 1e6:.1f} MB devices={DEVICES} repeat={a.repeat}",
              flush=True)
        best_base = best_ours = float("inf")
        for i in range(a.repeat):
            for side in (("baseline", "ours") if i % 2 == 0 else ("ours", "baseline")):
                gc.collect()
                out_dir = tempfile.mkdtemp(dir=work)
                if side == "baseline":
                    wall, t = run_baseline(path, f"{out_dir}/counts")
                    best_base = min(best_base, t)
                    detail = f"groups={count_lines(out_dir, 'counts')}"
                else:
                    wall, t = run_ours(path, out_dir, [f"--output={out_dir}/obs"])
                    best_ours = min(best_ours, t)
                    detail = (f"observations={count_lines(out_dir, 'obs')} "
                              f"dead_letters={count_lines(out_dir, 'dead')}")
                print(f"run {i + 1} {side:8s} cpu {t:7.2f}s {n / t:9,.0f} msgs/s  (wall {wall:7.2f}s)  {detail}",
                      flush=True)
        if not a.no_fhir:
            print(f"ours into the local FHIR server (not in the ratio): {run_fhir(path, work, n)}", flush=True)
        for scale in a.scale:
            r = measure_scale(scale, work)
            print(f"scale messages={r['messages']} cpu_seconds={r['cpu_seconds']:.2f} wall_seconds={r['seconds']:.2f} "
                  f"msgs_per_s={r['messages'] / r['cpu_seconds']:,.0f} peak_rss_mb={r['peak_rss_mb']:.0f} "
                  f"observations={r['observations']}", flush=True)
        ours_rate, base_rate = n / best_ours, n / best_base
        print(f"ratio={ours_rate / base_rate:.3f} msgs_per_s={ours_rate:.0f} baseline_msgs_per_s={base_rate:.0f}")


if __name__ == "__main__":
    main()
