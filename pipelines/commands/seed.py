"""``iomt-fhir seed``: create the Patients and Devices ``--identity-mode Lookup`` needs.

CLI glue only; the logic is ``transforms.fhir.seed``. Rows come from ``--devices FILE`` (CSV or
JSON lines: device id, patient id, optional encounter id) or, with ``--from-simulator``, exactly
the devices ``scripts/simulate_devices.py`` sends as (``pipelines.simulator.devices``). ``--periods FILE``
(CSV ``device,patient,start,end[,status]``, end empty = ongoing) creates or updates the
DeviceUseStatements ``--identity-mode LookupByDeviceUse`` reads (``transforms.fhir.seed``);
``--from-simulator --handover-at TIME`` also gives each simulated device to a new patient at TIME
(``device-00i`` worn by ``patient-00i`` until TIME, then by ``patient-{i+N}``). Prints counts on
stderr, and one line per failed row (line number, error type, reason: never identifiers).
Exit 0 when every row is seeded, 1 when some rows failed, 2 for usage or an unreadable file.
"""
import argparse
import sys

from pipelines.launch_errors import EXIT_FAILURES, EXIT_REFUSED
from transforms.fhir.auth import AUTH_KINDS


def register(sub) -> None:
    """Add the ``seed`` sub-command to ``iomt-fhir``'s sub-parsers."""
    s = sub.add_parser("seed", help="create the Patients/Devices (and Encounters) Lookup mode finds, or device use periods",
                       description="Create the Patients and Devices (and Encounters) that --identity-mode Lookup finds.")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--devices", metavar="FILE",
                     help="CSV (device_id,patient_id[,encounter_id]; header optional) or JSON lines")
    src.add_argument("--periods", metavar="FILE",
                     help="device use periods, CSV device,patient,start,end[,status] (header optional; end "
                          "empty = ongoing, start empty = since always; FHIR dateTimes) for "
                          "--identity-mode LookupByDeviceUse")
    src.add_argument("--from-simulator", action="store_true",
                     help="seed exactly the simulator's devices (scripts/simulate_devices.py)")
    s.add_argument("--devices-count", type=int, default=None, metavar="N",
                   help="with --from-simulator: its --devices (default: the simulator's default)")
    s.add_argument("--handover-at", metavar="TIME", default=None,
                   help="with --from-simulator: also seed use periods, each device handed from its patient "
                        "to a new one (patient-{i+N}) at this FHIR dateTime")
    s.add_argument("--fhir-url", required=True, help="FHIR R4 base URL")
    s.add_argument("--fhir-auth", default="none", choices=AUTH_KINDS,
                   help="credentials from the environment, as for 'run'")
    s.add_argument("--device-identifier-system", default="",
                   help="system of Device.identifier: the same value the pipeline runs with")
    s.add_argument("--relink", action="store_true",
                   help="move a Device linked to another Patient to the file's Patient (default: error)")
    s.set_defaults(func=cmd_seed)


def simulator_handovers(devices, at: str):
    """Period rows handing each simulated device to a new patient at ``at``."""
    from transforms.mapping.device_use import PeriodRow

    n = len(devices)
    rows = []
    for d, device in enumerate(devices):
        rows.append(PeriodRow(device["device_id"], device["patient_id"], "", at))
        rows.append(PeriodRow(device["device_id"], f"patient-{d + n:03d}", at, ""))
    return rows


def _rows(args):
    from transforms.fhir.seed import read_rows, row_from_record
    from transforms.mapping.device_use import read_period_rows

    if args.from_simulator:
        from pipelines.simulator import devices as simulator

        devices = simulator.simulated_devices(args.devices_count) if args.devices_count is not None \
            else simulator.simulated_devices()
        rows = [row_from_record(d) for d in devices]
        if args.handover_at:
            rows += simulator_handovers(devices, args.handover_at)
        return list(enumerate(rows, 1))
    try:
        with open(args.periods or args.devices, encoding="utf-8-sig") as f:
            return list(read_period_rows(f.read()) if args.periods else read_rows(f.read()))
    except (OSError, UnicodeDecodeError) as e:
        print(f"iomt-fhir seed: error: cannot read {args.periods or args.devices}: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


def cmd_seed(args: argparse.Namespace) -> int:
    from transforms.fhir.auth import AuthError, auth_from_options
    from transforms.fhir.client import FhirClient
    from transforms.fhir.seed import Seeder

    if args.devices_count is not None and not args.from_simulator:
        print("iomt-fhir seed: error: --devices-count needs --from-simulator", file=sys.stderr)
        return EXIT_REFUSED
    if args.handover_at is not None:
        from transforms.mapping.device_use import instant_range

        if not args.from_simulator:
            print("iomt-fhir seed: error: --handover-at needs --from-simulator", file=sys.stderr)
            return EXIT_REFUSED
        if instant_range(args.handover_at) is None:
            print("iomt-fhir seed: error: --handover-at must be a FHIR dateTime (e.g. 2026-03-01T10:30:00Z)",
                  file=sys.stderr)
            return EXIT_REFUSED
    if args.devices_count is not None and args.devices_count < 1:
        print("iomt-fhir seed: error: --devices-count must be at least 1", file=sys.stderr)
        return EXIT_REFUSED
    rows = _rows(args)
    try:
        client = FhirClient(args.fhir_url, auth_from_options(args.fhir_auth, args.fhir_url))
    except AuthError as e:  # names the missing variable, never its value
        print(f"iomt-fhir seed: error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        report = Seeder(client, args.device_identifier_system, relink=args.relink).seed(rows)
    finally:
        client.close()
    for line, error_type, message in report.errors:
        print(f"row {line}: {error_type}: {message}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return EXIT_FAILURES if report.errors else 0
