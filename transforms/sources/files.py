"""``ReadArchiveFiles``: a file pattern on any Beam filesystem -> ``DeviceEvent`` + read dead letters.

    pattern -> MatchAll -> plan (file -> byte ranges) -> Reshuffle -> read + parse (one DoFn)

Why not ``ReadFromText``: its source raises out of the bundle on a truncated gzip, a file
that vanished after matching or a permission error, and a backfill over thousands of
files must not stop for one. Here each file (or range) is read inside a ``try``: what
cannot be read becomes one dead-letter record at stage ``read`` (error type, file path,
byte offset / record index, never content) and the run goes on.

Splitting: an uncompressed JSON-lines file larger than ``range_bytes`` (64 MiB) is cut
into byte ranges at planning time; each range reads the lines that *start* in it, so a
5 GB file becomes ~80 units that the Reshuffle spreads over the workers. That is what
``ReadAllFromText`` does; what we give up against ``ReadFromText`` is dynamic work
rebalancing inside a range (Dataflow's liquid sharding), which matters little at 64 MiB.
Compressed files and Avro files are read whole, one per worker (gzip/bz2 cannot be
entered in the middle; Capture writes many files of bounded size).

Parsing happens in the DoFn that reads (no per-element Map step after it): the reader
yields finished ``DeviceEvent``s, with the file's path under the ``SystemProperties``
entry ``iomt-source-file``.
"""
import bz2
import gzip
import lzma
import zlib
from typing import Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.sources import archive_formats as formats
from transforms import metrics
from transforms.records.dead_letter import DEAD_LETTER_TAG, STAGE_READ, dead_letter

RANGE_BYTES = 64 << 20

# (path, start, end or None for "to the end", size)
ReadUnit = Tuple[str, int, Optional[int], int]


def plan_reads(path: str, size: int, input_format: str, range_bytes: int = RANGE_BYTES) -> Iterable[ReadUnit]:
    """The read units of one matched file: byte ranges for plain text, else the whole file."""
    splittable = (input_format in formats.TEXT_FORMATS
                  and CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED)
    if not splittable or size is None or size <= range_bytes:
        return [(path, 0, None, size)]
    return [(path, start, min(start + range_bytes, size), size) for start in range(0, size, range_bytes)]


def read_dead_letter(path: str, error: formats.ArchiveReadError):
    """The dead-letter record of a file (or one record of it) that could not be read."""
    return dead_letter(STAGE_READ, error, {"file": path, "byte_offset": error.byte_offset,
                                           "record_index": error.record_index})


class _Inflate:
    """A read-only zlib (``.deflate``, as Beam writes it) stream that, unlike Beam's
    ``CompressedFile``, raises ``EOFError`` when the data ends before the stream does."""

    def __init__(self, raw):
        self._raw = raw
        self._z = zlib.decompressobj()

    def read(self, n: int = -1) -> bytes:
        while True:
            if self._z.unconsumed_tail:
                out = self._z.decompress(self._z.unconsumed_tail, max(n, 0))
            else:
                if self._z.eof:
                    return b""
                chunk = self._raw.read(formats.CHUNK_BYTES)
                if not chunk:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                out = self._z.decompress(chunk, max(n, 0))
            if out or self._z.eof:
                return out

    def close(self):
        self._raw.close()


def _decompressed(raw, compression: str):
    """Python's own decompressing readers: they raise ``EOFError`` on a truncated file where
    Beam's ``CompressedFile`` returns what it got and ends silently (a lost tail, unnoticed)."""
    if compression == CompressionTypes.GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == CompressionTypes.BZIP2:
        return bz2.BZ2File(raw, mode="rb")
    if compression == CompressionTypes.LZMA:
        return lzma.LZMAFile(raw, mode="rb")
    if compression == CompressionTypes.DEFLATE:
        return _Inflate(raw)
    raise AssertionError(compression)


def open_unit(path: str, start: int, input_format: str):
    """An open binary stream for a read unit: decompressed by extension for text formats."""
    if input_format == "capture-avro":
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    compression = CompressionTypes.detect_compression_type(path)
    if compression == CompressionTypes.ZSTD:
        return FileSystems.open(path, compression_type=compression)
    stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if compression != CompressionTypes.UNCOMPRESSED:
        return _decompressed(stream, compression)
    if start > 0:
        stream.seek(start - 1)  # read_lines skips through the first newline from here
    return stream


def read_unit(path: str, start: int, end: Optional[int], input_format: str):
    """Events (and ``ArchiveReadError`` items for single bad records) of one read unit;
    raises ``ArchiveReadError`` when the unit stops."""
    try:
        stream = open_unit(path, start, input_format)
    except Exception as e:
        raise formats.stopped(e, byte_offset=start) from None
    try:
        if input_format == "capture-avro":
            yield from formats.read_capture_avro(stream, path)
        elif input_format == "json-array":
            yield from formats.read_json_array(stream, path)
        else:
            yield from formats.read_lines(stream, start, end, path, input_format == "envelope")
    finally:
        try:
            stream.close()
        except Exception:  # a failed close of a read-only stream loses nothing
            pass


class PlanReadsFn(beam.DoFn):
    def __init__(self, input_format: str, range_bytes: int):
        self._format = input_format
        self._range_bytes = range_bytes
        self._matched = metrics.counter(metrics.NAMESPACE, "FilesMatched")  # also for progress lines

    def process(self, metadata):
        self._matched.inc()
        yield from plan_reads(metadata.path, metadata.size_in_bytes, self._format, self._range_bytes)


class ReadUnitFn(beam.DoFn):
    """Reads and parses one unit; every failure is a dead letter, never a failed bundle."""

    def __init__(self, input_format: str):
        self._format = input_format
        self._read = metrics.counter(metrics.NAMESPACE, "FilesRead")
        self._failed = Metrics.counter(metrics.NAMESPACE, "FilesFailed")

    def process(self, unit: ReadUnit):
        path, start, end, _size = unit
        try:
            for item in read_unit(path, start, end, self._format):
                if isinstance(item, formats.ArchiveReadError):
                    yield self._dead(path, item)
                else:
                    yield item
        except formats.ArchiveReadError as e:
            self._failed.inc()
            yield self._dead(path, e)
            return
        except Exception as e:  # anything else a filesystem raises mid-read
            self._failed.inc()
            yield self._dead(path, formats.stopped(e, byte_offset=start))
            return
        if end is None or end >= (_size or 0):
            self._read.inc()

    @staticmethod
    def _dead(path, error):
        metrics.error_counter(STAGE_READ, error.error_type).inc()
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, read_dead_letter(path, error))


class ReadArchiveFiles(beam.PTransform):
    """File pattern -> outputs ``events`` (``DeviceEvent``) and ``dead_letter`` (stage ``read``)."""

    def __init__(self, pattern: str, input_format: str = "body", range_bytes: int = RANGE_BYTES):
        super().__init__()
        if input_format not in formats.INPUT_FORMATS:
            raise ValueError(f"--input-format must be one of {', '.join(formats.INPUT_FORMATS)}")
        self._pattern = pattern
        self._format = input_format
        self._range_bytes = range_bytes

    def expand(self, pbegin):
        return (pbegin
                | "Pattern" >> beam.Create([self._pattern])
                | "Match" >> fileio.MatchAll()
                | "Plan" >> beam.ParDo(PlanReadsFn(self._format, self._range_bytes))
                | "Spread" >> beam.Reshuffle()
                | "ReadAndParse" >> beam.ParDo(ReadUnitFn(self._format)).with_outputs(
                    DEAD_LETTER_TAG, main="events"))
