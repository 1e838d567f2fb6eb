"""Windowing and file names for JSON-lines outputs of a stream (dead letters, Observations).

Why not plain 60 s fixed windows: a window's file is written when the watermark passes its
end, and a Kafka / Event Hubs read holds the watermark back while a partition is idle (an
Event Hub has several; a quiet one is normal), so dead letters could wait indefinitely.
Here each window also fires every ``FLUSH_SECONDS`` of processing time (discarding what was
written), so a dead letter is on disk within seconds whatever the watermark does; each
firing is its own file, named with its pane index (Beam's default naming leaves the pane
out, so a second firing would overwrite the first; where the runner gives no pane, a
random tag).
"""
import uuid

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import trigger, window

WINDOW_SECONDS = 60
FLUSH_SECONDS = 10


def flushed_windows(window_seconds: int = WINDOW_SECONDS, flush_seconds: int = FLUSH_SECONDS):
    return beam.WindowInto(
        window.FixedWindows(window_seconds),
        trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(flush_seconds)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING)


def pane_file_naming(prefix: str, suffix: str = ""):
    """``prefix-START-END-PANE-SHARD-of-N.suffix``: one file per window *and* firing."""
    def _inner(win, pane, shard_index, total_shards, compression, destination):
        name = fileio.default_file_naming(prefix, suffix)(win, pane, shard_index, total_shards,
                                                          compression, destination)
        index = getattr(pane, "index", None)
        # Some runners hand no pane to the naming step: a unique tag then, never an overwrite.
        tag = f"pane{index}" if index is not None else uuid.uuid4().hex[:12]
        parts = name.split("-")  # ...-<shard>-of-<n><suffix>: the pane goes before the shard
        for i in range(len(parts) - 2, 0, -1):
            if parts[i] == "of":
                parts.insert(i - 1, tag)
                return "-".join(parts)
        return f"{name}-{tag}"
    return _inner
