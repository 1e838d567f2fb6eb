#!/usr/bin/env python3
"""Deterministic device-message generator for the demo, the benchmarks and tests.

Writes JSON lines of device message *bodies* shaped for ``templates/devicecontent.json``:
per-minute heart rate, blood pressure, batched step counts (a JSON array body with epoch
seconds), body weight in pounds and "worn" events, for a few synthetic devices. With
``--bad N`` it also mixes in N messages that cannot be normalized (not JSON, a missing
required value) so the dead-letter path is exercised. Same arguments -> same bytes.
"""
import argparse
import calendar
import json
import random
import sys
import time


def iso(epoch: float) -> str:
    whole = int(epoch)
    ms = int(round((epoch - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def messages(devices: int, minutes: int, start: str, seed: int):
    rnd = random.Random(seed)
    t0 = calendar.timegm(time.strptime(start, "%Y-%m-%dT%H:%M:%SZ"))
    for minute in range(minutes):
        for d in range(devices):
            dev, pat = f"device-{d:03d}", f"patient-{d:03d}"
            t = t0 + minute * 60 + d  # devices a second apart
            yield {"heartRate": str(rnd.randint(55, 110)), "endDate": iso(t),
                   "deviceId": dev, "patientId": pat}
            if minute % 30 == 0:
                yield {"systolic": str(rnd.randint(105, 140)), "diastolic": str(rnd.randint(65, 90)),
                       "endDate": iso(t + 0.5), "deviceId": dev, "patientId": pat}
            if minute % 60 == 59:
                yield [{"steps": rnd.randint(0, 900), "epochSeconds": t - 60 * k,
                        "deviceId": dev, "patientId": pat} for k in range(3)]
            if minute == 0:
                yield {"event": "worn", "endDate": iso(t + 0.25), "deviceId": dev, "patientId": pat}
                yield {"weightLbs": f"{rnd.uniform(120, 220):.1f}", "endDate": iso(t + 0.75),
                       "deviceId": dev, "patientId": pat}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--minutes", type=int, default=120)
    p.add_argument("--start", default="2026-01-05T08:00:00Z")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--bad", type=int, default=0, help="mix in N messages that fail normalization")
    p.add_argument("--output", default="-")
    a = p.parse_args(argv)
    out = sys.stdout if a.output == "-" else open(a.output, "w", encoding="utf-8")
    lines = [json.dumps(m, separators=(",", ":")) for m in messages(a.devices, a.minutes, a.start, a.seed)]
    if a.bad:
        step = max(1, len(lines) // (a.bad + 1))
        for i in range(a.bad):
            bad = ('{"heartRate": "71", "deviceId": "device-000", "endDate": "not-a-date"}' if i % 2
                   else "{this is not json")
            lines.insert(step * (i + 1), bad)
    out.write("\n".join(lines) + "\n")
    if out is not sys.stdout:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
