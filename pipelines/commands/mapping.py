"""``iomt-fhir validate | normalize | transform``: the mapping core, offline, as commands.

The same functions the pipeline's DoFns and the debugger call (``transforms.mapping.offline``),
so what these print is what a run would produce. A failing input line never stops the others:
it becomes one JSON error line (``{"line", "error", "message"}``) on ``--errors`` and
processing goes on. Error messages never contain message content (PHI), only field and
expression names. An invalid mapping prints every problem and exits 2.
"""
import json
import sys
from typing import IO, Iterator, List, Optional, Tuple

from pipelines.launch_errors import EXIT_REFUSED
from transforms.mapping.errors import InvalidDataFormatException


def _open_in(path: Optional[str]) -> IO:
    """The input as bytes (stdin's buffer when it has one): lines are decoded one by one."""
    if path in (None, "-"):
        return getattr(sys.stdin, "buffer", sys.stdin)
    return open(path, "rb")


def _open_out(path: Optional[str], default: IO[str]) -> IO[str]:
    return default if path in (None, "-") else open(path, "w", encoding="utf-8")


def _lines(stream: IO) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text) of each non-blank line (``offline.numbered_lines``)."""
    from transforms.mapping.offline import numbered_lines

    return numbered_lines(stream)


def _error_line(out: IO[str], line: int, exc: BaseException) -> None:
    from transforms.records.dead_letter import error_type_of

    out.write(json.dumps({"line": line, "error": error_type_of(exc), "message": str(exc)}) + "\n")


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _ensure_valid(path: str, mapping):
    """Print every problem of an invalid mapping (``FILE:LINE:POS: severity: message``), exit 2."""
    from transforms.mapping.validation import Problem

    if not mapping.valid:
        for e in mapping.errors:
            print(str(Problem(path, e)), file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)
    return mapping


def _load_valid_device_mapping(path: str):
    from transforms.mapping.validation import load_device

    return _ensure_valid(path, load_device(path))


def _load_valid_fhir_mapping(path: str):
    from transforms.mapping.validation import load_fhir

    return _ensure_valid(path, load_fhir(path))


def _open_input(path: Optional[str]) -> IO[str]:
    try:
        return _open_in(path)
    except OSError as e:
        print(f"iomt-fhir: error: cannot read input {path}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


def _open_errors(path: Optional[str]) -> IO[str]:
    try:
        return _open_out(path, sys.stderr)
    except OSError as e:
        print(f"iomt-fhir: error: cannot write errors to {path}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


def cmd_validate(args) -> int:
    from transforms.mapping.validation import validate

    problems = validate(args.device_mapping, args.fhir_mapping, medtech=args.medtech)
    for p in problems:
        print(str(p), file=sys.stderr)
    if problems:
        return EXIT_REFUSED
    print("valid", file=sys.stderr)
    return 0


def cmd_normalize(args) -> int:
    mapping = _load_valid_device_mapping(args.device_mapping)
    out = sys.stdout
    stream = _open_input(args.input)
    errors = _open_errors(args.errors)
    from transforms.mapping.offline import normalize_lines

    try:
        for number, measurements, exc in normalize_lines(mapping, _lines(stream), args.input_format):
            if exc is not None:  # a bug of ours must not stop the other lines either
                _error_line(errors, number, exc)
                continue
            for m in measurements:
                out.write(_dump(m.to_json()) + "\n")
    finally:
        _close(stream, errors)
    out.flush()
    return 0


def _close(stream: IO[str], errors: IO[str]) -> None:
    if stream not in (sys.stdin, getattr(sys.stdin, "buffer", None)):
        stream.close()
    if errors is sys.stderr:
        errors.flush()
    else:
        errors.close()


def _load_device_use(path: Optional[str]):
    """``--device-use FILE``: the periods table, or exit 2 naming the bad rows (line numbers only)."""
    if not path:
        return None
    from transforms.mapping.device_use import DeviceUseTable

    try:
        with open(path, encoding="utf-8-sig") as f:
            table, bad = DeviceUseTable.from_csv(f.read())
    except (OSError, UnicodeDecodeError) as e:
        print(f"iomt-fhir: error: cannot read --device-use {path}: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)
    for line, exc in bad:
        print(f"{path}:{line}: error: {exc}", file=sys.stderr)
    if bad:
        raise SystemExit(EXIT_REFUSED)
    return table


def cmd_transform(args) -> int:
    from transforms.mapping.measurement import Measurement
    from transforms.mapping.offline import observations_for

    mapping = _load_valid_fhir_mapping(args.fhir_mapping)
    device_use = _load_device_use(getattr(args, "device_use", None))
    stream = _open_input(args.input)
    errors = _open_errors(args.errors)
    measurements: List[Tuple[int, Measurement]] = []
    try:
        for number, line in _lines(stream):
            try:
                value = json.loads(line)
            except ValueError:
                _error_line(errors, number, InvalidDataFormatException("The line is not valid JSON."))
                continue
            try:
                measurements.append((number, Measurement.from_json(value)))
            except Exception as e:  # MappingError, or a shape from_json does not expect
                _error_line(errors, number, e)
        for obs, failure in observations_for(mapping, measurements, device_use):
            if failure is not None:
                line, exc = failure
                _error_line(errors, line, exc)
            else:
                sys.stdout.write(_dump(obs) + "\n")
    finally:
        _close(stream, errors)
    sys.stdout.flush()
    return 0


def register_mapping_commands(sub) -> None:
    v = sub.add_parser("validate", help="check mappings; exit 2 with one line per problem")
    v.add_argument("--device-mapping", required=True)
    v.add_argument("--fhir-mapping")
    v.add_argument("--medtech", action="store_true",
                   help="also warn about our extensions MedTech does not load (the 'profiles' field)")
    v.set_defaults(func=cmd_validate)

    n = sub.add_parser("normalize", help="device messages (JSON lines) -> measurements")
    n.add_argument("--device-mapping", required=True)
    n.add_argument("--input", help="JSON-lines file (default: stdin)")
    n.add_argument("--input-format", choices=("body", "envelope"), default="body")
    n.add_argument("--errors", help="file for error lines (default: stderr)")
    n.set_defaults(func=cmd_normalize)

    t = sub.add_parser("transform", help="measurements (JSON lines) -> FHIR Observations")
    t.add_argument("--fhir-mapping", required=True)
    t.add_argument("--input", help="JSON-lines file of measurements (default: stdin)")
    t.add_argument("--errors", help="file for error lines (default: stderr)")
    t.add_argument("--device-use", metavar="CSV",
                   help="device use periods (device,patient,start,end[,status]): each reading goes to the "
                        "patient who wore its device then, as --identity-mode LookupByDeviceUse would decide")
    t.set_defaults(func=cmd_transform)
