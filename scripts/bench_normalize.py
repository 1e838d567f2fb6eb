"""Benchmark: normalize a CalculatedContent heart-rate template over many messages.

Prints throughput of our normalization (parse + template matching + extraction +
Measurement objects) next to the ceiling, a bare ``json.loads`` loop over the same
message strings. Best of ``--repeat`` runs each, single process (one core).
Last line: ``ratio=<ours/ceiling> msgs_per_s=<ours> ceiling_msgs_per_s=<ceiling>``.
"""
import argparse
import gc
import json
import time

from transforms.mapping.device_templates import envelope, load_device_mapping

TEMPLATE = {
    "templateType": "CollectionContent",
    "template": [{
        "templateType": "CalculatedContent",
        "template": {
            "typeName": "heartrate",
            "typeMatchExpression": "$..[?(@heartRate)]",
            "deviceIdExpression": "$.matchedToken.deviceId",
            "patientIdExpression": "$.matchedToken.patientId",
            "timestampExpression": "$.matchedToken.endDate",
            "values": [{"required": "true", "valueExpression": "$.matchedToken.heartRate",
                        "valueName": "hr"}],
        },
    }],
}


def make_messages(n: int):
    out = []
    for i in range(n):
        sec = i % 86400
        out.append(json.dumps({
            "heartRate": str(55 + i % 60),
            "endDate": f"2026-01-05T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{i % 1000:03d}Z",
            "deviceId": f"device-{i % 500:04d}",
            "patientId": f"patient-{i % 500:04d}",
        }))
    return out


def best_of(repeat, fn):
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    msgs = make_messages(a.messages)
    mapping = load_device_mapping(json.dumps(TEMPLATE)).ensure_valid()
    loads = json.loads
    get = mapping.get_measurements

    def ceiling():
        for s in msgs:
            loads(s)

    produced = [0]

    def ours():
        n = 0
        for s in msgs:
            n += len(get(envelope(loads(s))))
        produced[0] = n

    t_ceiling = best_of(a.repeat, ceiling)
    t_ours = best_of(a.repeat, ours)
    if produced[0] != a.messages:
        raise SystemExit(f"expected {a.messages} measurements, got {produced[0]}")
    ours_rate = a.messages / t_ours
    ceiling_rate = a.messages / t_ceiling
    print(f"messages={a.messages} measurements={produced[0]} repeat={a.repeat}")
    print(f"json.loads only: {t_ceiling:.3f}s  {ceiling_rate:,.0f} msgs/s")
    print(f"normalize:       {t_ours:.3f}s  {ours_rate:,.0f} msgs/s  "
          f"({1e6 * t_ours / a.messages:.2f} us/msg)")
    print(f"ratio={ours_rate / ceiling_rate:.3f} msgs_per_s={ours_rate:.0f} ceiling_msgs_per_s={ceiling_rate:.0f}")


if __name__ == "__main__":
    main()
