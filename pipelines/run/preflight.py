"""Preflight: check the destination and the source before any data flows.

Why: a wrong ``--fhir-url`` (a typo, a wrong base path, expired credentials) otherwise
shows up only as every group dead-lettered, hour after hour, on a long backfill. Like
MedTech's health checks (``FhirService:IsAuthenticated``...), the launcher asks the server:

1. it answers ``GET [base]/metadata`` with a ``CapabilityStatement`` (a 404 or an HTML
   page means a wrong base path or not a FHIR server);
2. its ``fhirVersion`` is R4 (4.0.x);
3. the credentials work for what the job does: a read by id (``Observation/<id>``,
   404 expected) and the identifier search of identity resolution (``Device?identifier=``
   with the device identifier system, so in Lookup mode the system is searchable; in
   Create mode also ``Patient?identifier=``).

Sources are checked where it is cheap: a file pattern must match a file; a Pub/Sub
subscription must exist. Each failure is one :class:`LaunchError` line: what was tried,
the status, the server's OperationOutcome text; never a token, a query string or
user:password of the URL. Only fixed probe values are searched for (no PHI).
"""
import logging
from typing import Callable, List, Optional

from pipelines.launch_errors import LaunchError, check_http_url, one_line, safe_url
from transforms.fhir.auth import AUTH_KINDS
from transforms.fhir.identity import MODES as IDENTITY_MODES
from transforms.fhir.server_profiles import KINDS as SERVER_KINDS

log = logging.getLogger(__name__)

PROBE_ID = "iomt-fhir-preflight"


class PreflightFailed(LaunchError):
    """The destination or source is not usable; the message is the one line to print."""


def _client(url: str, auth_kind: str):
    from transforms.fhir.auth import auth_from_options
    from transforms.fhir.client import FhirClient
    from transforms.fhir.retry import RetryPolicy

    try:
        auth = auth_from_options(auth_kind or "none", url)
    except Exception as e:  # missing environment variables, unknown kind: no secret in the text
        raise PreflightFailed(f"--fhir-auth {auth_kind}: {one_line(e)}") from None
    # A launch check must be quick: two attempts, a few seconds; the job's own budget is longer.
    return FhirClient(url, auth, timeout=(5.0, 20.0),
                      retry_policy=RetryPolicy(max_attempts=2, initial_backoff=0.2, max_total_seconds=5.0))


def _describe(err) -> str:
    status = getattr(err, "status", None)
    text = getattr(err, "outcome_text", "") or ""
    if status is None:
        reason = one_line(err)
        if "transport error" in reason or "ConnectionError" in reason or "Timeout" in reason:
            return f"no answer ({reason.split(': ', 1)[-1]}); is a server listening there?"
        return reason
    hint = {401: "credentials refused", 403: "credentials lack permission",
            404: "not found: is the base path right?"}.get(status, "")
    return f"answered {status}" + (f" ({hint})" if hint else "") + (f": {text}" if text else "")


def check_fhir(url: str, auth_kind: str = "none", identity_mode: str = "Create",
               device_system: str = "", client_factory: Optional[Callable] = None,
               capabilities: Optional[dict] = None) -> List[str]:
    """Raise :class:`PreflightFailed` (one line) unless the server is usable; returns what passed.

    ``capabilities``, when given, receives the server's CapabilityStatement (the launcher picks
    the server's profile from it)."""
    from transforms.fhir.client import FhirError

    check_http_url("--fhir-url", url)
    where = safe_url(url).rstrip("/")
    client = (client_factory or _client)(url, auth_kind)
    passed = []
    try:
        try:
            resp = client.request("GET", "metadata", what="GET metadata")
        except FhirError as e:
            raise PreflightFailed(f"FHIR server check: GET {where}/metadata {_describe(e)}") from None
        except Exception as e:  # token endpoint, TLS ... (messages carry no secrets)
            raise PreflightFailed(f"FHIR server check: GET {where}/metadata failed: "
                                  f"{type(e).__name__}: {one_line(e)}") from None
        cap = resp.resource
        if not isinstance(cap, dict) or cap.get("resourceType") != "CapabilityStatement":
            got = cap.get("resourceType") if isinstance(cap, dict) else "no FHIR JSON"
            raise PreflightFailed(f"FHIR server check: GET {where}/metadata answered {resp.status} with "
                                  f"{got}, not a CapabilityStatement: not a FHIR server, or a wrong base path")
        version = str(cap.get("fhirVersion") or "")
        if not version.startswith("4.0"):
            raise PreflightFailed(f"FHIR server check: {where} speaks FHIR {version or '(version not stated)'}, "
                                  "this connector writes FHIR R4 (4.0.x)")
        passed.append(f"GET metadata: FHIR {version}")
        if capabilities is not None:
            capabilities.update(cap)
        probes = [("read Observation", lambda: client.read("Observation", PROBE_ID))]
        value = f"{device_system}|{PROBE_ID}" if device_system else PROBE_ID
        probes.append(("search Device?identifier" + ("=SYSTEM|..." if device_system else ""),
                       lambda: client.search("Device", {"identifier": value, "_count": "1"}, limit=1)))
        if identity_mode == "Create":
            probes.append(("search Patient?identifier",
                           lambda: client.search("Patient", {"identifier": PROBE_ID, "_count": "1"}, limit=1)))
        if identity_mode.startswith("LookupByDeviceUse"):
            probes.append(("search DeviceUseStatement?device",
                           lambda: client.search("DeviceUseStatement", {"device": f"Device/{PROBE_ID}",
                                                                        "_count": "1"}, limit=1)))
        for what, probe in probes:
            try:
                probe()
            except FhirError as e:
                extra = (" (the device identifier system must be searchable for --identity-mode "
                         f"{identity_mode})") if "Device" in what and getattr(e, "status", None) == 400 else ""
                raise PreflightFailed(f"FHIR server check: {what} at {where} {_describe(e)}{extra}") from None
            except Exception as e:
                raise PreflightFailed(f"FHIR server check: {what} at {where} failed: "
                                      f"{type(e).__name__}: {one_line(e)}") from None
            passed.append(f"{what}: authorised")
    finally:
        client.close()
    return passed


def check_input_pattern(pattern: str) -> str:
    """The pattern must match at least one file (on any Beam filesystem)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        found = FileSystems.match([pattern], limits=[1])[0].metadata_list
    except Exception as e:
        raise PreflightFailed(f"--input {pattern!r}: cannot list files: {type(e).__name__}: "
                              f"{one_line(e)}") from None
    if not found:
        raise PreflightFailed(f"--input {pattern!r} matches no file (quote a glob, e.g. "
                              "--input 'archive/*.jsonl', so the shell does not expand it)")
    return f"--input matches files (e.g. {found[0].path.rsplit('/', 1)[-1]})"


def check_pubsub_subscription(subscription: str, timeout: float = 10.0) -> str:
    """The subscription must exist. Other failures (no permission to look it up from this
    machine, no credentials here) are only warnings: the workers may still have access."""
    try:
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1
    except ImportError:
        return "Pub/Sub subscription not checked (google-cloud-pubsub not installed)"
    try:
        client = pubsub_v1.SubscriberClient()
        try:
            client.get_subscription(request={"subscription": subscription}, timeout=timeout)
        finally:
            client.close()
    except gexc.NotFound:
        raise PreflightFailed(f"--pubsub-subscription {subscription}: no such subscription") from None
    except gexc.InvalidArgument as e:
        raise PreflightFailed(f"--pubsub-subscription {subscription}: {one_line(e)}") from None
    except Exception as e:
        log.warning("Pub/Sub subscription not checked: %s", type(e).__name__)
        return f"Pub/Sub subscription not checked ({type(e).__name__})"
    return "Pub/Sub subscription exists"


def check_launch(opts, capabilities: Optional[dict] = None) -> List[str]:
    """Every check the options call for (``iomt-fhir run`` and ``iomt-fhir check``); the FHIR
    server's CapabilityStatement goes to ``capabilities`` when given."""
    passed = []
    if getattr(opts, "input", None):
        passed.append(check_input_pattern(opts.input))
    if getattr(opts, "pubsub_subscription", None):
        passed.append(check_pubsub_subscription(opts.pubsub_subscription))
    if getattr(opts, "fhir_url", None):
        cap = capabilities if capabilities is not None else {}
        passed.extend(check_fhir(opts.fhir_url, opts.fhir_auth, opts.identity_mode,
                                 opts.device_identifier_system or "", capabilities=cap))
        if getattr(opts, "fhir_server_kind", None) is not None:  # iomt-fhir check
            from transforms.fhir.server_profiles import resolve
            passed.append(resolve(opts.fhir_server_kind, cap).describe())
    return passed


# -- iomt-fhir check ------------------------------------------------------------------------
def register(sub) -> None:
    c = sub.add_parser("check", help="check a FHIR server (and a source) as run does at launch",
                       description="Check the FHIR server (metadata, FHIR R4, credentials, the searches "
                                   "identity needs) and, if given, the source. Exit 0 when usable, 2 "
                                   "with one line saying what failed.")
    c.add_argument("--fhir-url", required=True)
    c.add_argument("--fhir-auth", default="none", choices=AUTH_KINDS,
                   help="credentials come from the environment (see README) (default: none)")
    c.add_argument("--identity-mode", default="Create", choices=IDENTITY_MODES)
    c.add_argument("--device-identifier-system", default="")
    c.add_argument("--fhir-server-kind", default="auto", choices=SERVER_KINDS,
                   help="the server's product (default auto: from its CapabilityStatement); prints the "
                        "writer defaults its profile gives")
    c.add_argument("--input", help="a file pattern that must match a file")
    c.add_argument("--pubsub-subscription", help="projects/P/subscriptions/S that must exist")
    c.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    for line in check_launch(args):
        print("ok: " + line)
    return 0
