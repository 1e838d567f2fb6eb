"""``iomt-fhir misattributed``: after a DeviceUseStatement was corrected, find (and with
``--correct`` withdraw or cut) this connector's Observations left on the wrong patient.

The runbook (README "Devices that change hands", Correcting the past): fix the statements
(``seed --periods``, or in the EHR), re-run the backfill for the time range in
``--identity-mode LookupByDeviceUse`` (the readings go to the right patients), then run this for
the same devices and range: it reads each device's periods now and its Observations in the range
(``Observation?device=&date=``), judges each (``transforms.mapping.device_use_audit``) and prints
one JSON line per Observation that is not right (its id, finding, counts: no patient, no device
identifier). ``--correct`` marks the wholly misattributed ``entered-in-error`` and blanks the
other wearers' SampledData slots of the partly misattributed (``If-Match`` their version).
Observations without this connector's identifier system are never changed.
Exit 0 nothing found (or everything found corrected), 1 something left to do, 2 refused.
"""
import argparse
import json
import sys

from pipelines.launch_errors import EXIT_FAILURES, EXIT_REFUSED
from transforms.fhir.auth import AUTH_KINDS


def register(sub) -> None:
    m = sub.add_parser("misattributed", help="find (and --correct) Observations on a patient who did not wear "
                                             "the device then",
                       description="After a DeviceUseStatement was corrected and the backfill re-run: list this "
                                   "connector's Observations of the devices in the range that sit on a patient "
                                   "who did not wear the device then; --correct withdraws or cuts them.")
    m.add_argument("--device", action="append", default=[], metavar="ID", help="a device identifier (repeatable)")
    m.add_argument("--periods", metavar="FILE", help="the devices of this period CSV (its device column)")
    m.add_argument("--since", required=True, help="start of the range (FHIR dateTime)")
    m.add_argument("--until", required=True, help="end of the range (FHIR dateTime, inclusive)")
    m.add_argument("--fhir-url", required=True)
    m.add_argument("--fhir-auth", default="none", choices=AUTH_KINDS)
    m.add_argument("--device-identifier-system", default="")
    m.add_argument("--correct", action="store_true",
                   help="mark the wholly misattributed entered-in-error, blank other wearers' SampledData slots")
    m.set_defaults(func=cmd_misattributed)


def _devices(args) -> list:
    devices = list(args.device)
    if args.periods:
        from transforms.mapping.device_use import PeriodRow, read_period_rows
        try:
            with open(args.periods, encoding="utf-8-sig") as f:
                rows = read_period_rows(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"iomt-fhir misattributed: error: cannot read {args.periods}: "
                             f"{getattr(e, 'strerror', None) or e}")
        devices += [r.device_id for _, r in rows if isinstance(r, PeriodRow)]
    return list(dict.fromkeys(devices))


def cmd_misattributed(args: argparse.Namespace) -> int:
    from transforms.fhir.auth import AuthError, auth_from_options
    from transforms.fhir.client import FhirClient, FhirError
    from transforms.fhir.identity import IdentityService
    from transforms.fhir.writer import without_server_meta
    from transforms.mapping import device_use_audit as audit
    from transforms.mapping.device_use import instant_range
    from transforms.mapping.errors import MappingError

    ranges = [instant_range(args.since), instant_range(args.until)]
    if None in ranges:
        print("iomt-fhir misattributed: error: --since and --until must be FHIR dateTimes", file=sys.stderr)
        return EXIT_REFUSED
    devices = _devices(args)
    if not devices:
        print("iomt-fhir misattributed: error: give --device or --periods", file=sys.stderr)
        return EXIT_REFUSED
    try:
        client = FhirClient(args.fhir_url, auth_from_options(args.fhir_auth, args.fhir_url))
    except AuthError as e:
        print(f"iomt-fhir misattributed: error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    verdicts, left, corrected, failed = [], 0, 0, 0
    try:
        service = IdentityService(client, "LookupByDeviceUse", args.device_identifier_system or None,
                                  cache_seconds=0)
        for n, device in enumerate(devices, 1):
            try:  # no counting period left: every reading of ours there is misattributed
                uses = service.uses_of(device)
                periods = uses.periods
            except MappingError as e:  # reported by position in the list, never by identifier
                print(f"device {n}: {e.error_type}: {e}", file=sys.stderr)
                failed += 1
                continue
            found = client.search("Observation", [("device", f"Device/{uses.device}"),
                                                  ("date", f"ge{args.since}"), ("date", f"le{args.until}"),
                                                  ("_count", "200")], max_pages=1000)
            for observation in found:
                verdict = audit.judge(observation, periods)
                verdicts.append((observation["id"], verdict))
                if verdict.finding in (audit.CORRECT, audit.NOT_OURS, audit.WITHDRAWN):
                    continue
                done = False
                if args.correct and verdict.corrected is not None:
                    try:
                        client.put(without_server_meta(verdict.corrected),  # keeps meta.profile
                                   if_match=(observation.get("meta") or {}).get("versionId"))
                        done, corrected = True, corrected + 1
                    except FhirError as e:  # e.g. 412: written meanwhile; run again
                        print(f"Observation/{observation['id']}: not corrected: {e}", file=sys.stderr)
                left += not done
                print(json.dumps({"observation": observation["id"], "finding": verdict.finding,
                                  "readings": verdict.readings, "wrong": verdict.wrong,
                                  "corrected": done}))
    finally:
        client.close()
    print(audit.summary(verdicts) + f" corrected={corrected} device_errors={failed}", file=sys.stderr)
    return EXIT_FAILURES if left or failed else 0
