"""JSON-lines files: the Observation and dead-letter outputs, in batch and on a stream.

In batch, one ``WriteToText`` (one file with ``--single-file-outputs``). On a stream, windowed
files, with the windowing and file names below.

Why not plain 60 s fixed windows: a window's file is written when the watermark passes its
end, and a Kafka / Event Hubs read holds the watermark back while a partition is idle (an
Event Hub has several; a quiet one is normal), so dead letters could wait indefinitely.
Here each window also fires every ``FLUSH_SECONDS`` of processing time (discarding what was
written), so a dead letter is on disk within seconds whatever the watermark does; each
firing is its own file, named with its pane index (Beam's default naming leaves the pane
out, so a second firing would overwrite the first; where the runner gives no pane, a
random tag).
"""
import json
import uuid

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

WINDOW_SECONDS = 60
FLUSH_SECONDS = 10


def flushed_windows(window_seconds: int = WINDOW_SECONDS, flush_seconds: int = FLUSH_SECONDS):
    return beam.WindowInto(
        window.FixedWindows(window_seconds),
        trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(flush_seconds)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING)


class _NoTimestampToNow(beam.DoFn):
    """An element without a timestamp (Beam's minimum: records of a file read, as its dead
    letters of a ``--streaming`` run over files) gets the processing time instead. A fixed window
    around the minimum timestamp starts before it, and Beam's file writer fails building that
    window's result ("Python int too large to convert to C long"); later is always allowed."""

    def process(self, line, ts=beam.DoFn.TimestampParam):
        if ts <= MIN_TIMESTAMP:
            yield window.TimestampedValue(line, Timestamp.now())
        else:
            yield line


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


def _to_json_line(record) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)


def write_json_lines(pcoll, prefix: str, streaming: bool, single_file: bool, label: str):
    """JSON lines to files: one file per output in batch with ``single_file``, windowed files when streaming."""
    lines = pcoll | f"{label}ToJson" >> beam.Map(_to_json_line)
    if streaming:
        return (lines
                | f"{label}Stamp" >> beam.ParDo(_NoTimestampToNow())
                | f"{label}Window" >> flushed_windows()
                | f"{label}Write" >> fileio.WriteToFiles(path=prefix, shards=1,
                                                         file_naming=pane_file_naming(label, ".jsonl")))
    if single_file:
        return lines | f"{label}Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl",
                                                              num_shards=1, shard_name_template="")
    return lines | f"{label}Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
