"""Benchmark: SampledData strings (``build_sampled_data``) for periods of 1 h and 24 h.

The speed check lives here, not in tests/test_sampled_data.py: a wall-time assert on a shared
2-core machine fails when a neighbour is busy and proves nothing when it is idle. Prints the
time per build, best of ``--repeat`` runs, and the 24 h / 1 h ratio (about 24 when the build is
linear in the number of slots). Last line: ``ms_per_hour=<1 h build> ratio_24h=<24 h / 1 h>``.
"""
import argparse
import time

from transforms.mapping.sampled_data import build_sampled_data

S = 10_000_000  # .NET ticks per second
T0 = 638_760_000_000_000_000  # an arbitrary instant in ticks


def best_ms(hours: int, builds: int, repeat: int) -> float:
    end = T0 + hours * 3600 * S - 1
    values = [(T0 + k * 7 * S, str(k)) for k in range(500 * hours)]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(builds):
            build_sampled_data(values, T0, end, 1000)
        best = min(best, (time.perf_counter() - started) / builds * 1000)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--builds", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    hour = best_ms(1, a.builds, a.repeat)
    day = best_ms(24, max(1, a.builds // 24), a.repeat)
    print(f"1 h at 1000 ms (3600 slots, 500 values): {hour:.3f} ms per build")
    print(f"24 h at 1000 ms (86400 slots, 12000 values): {day:.3f} ms per build")
    print(f"ms_per_hour={hour:.3f} ratio_24h={day / hour:.1f}")


if __name__ == "__main__":
    main()
