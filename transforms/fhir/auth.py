"""Authentication for FHIR servers: none, static bearer, Entra ID client credentials,
Google Application Default Credentials, SMART Backend Services (signed JWT assertion).

Every provider has the same two-method surface used by :class:`FhirClient`:
``headers()`` (an ``Authorization`` header, refreshing first when the token is close to
expiry) and ``invalidate()`` (called after a 401 so the next ``headers()`` fetches a new
token — the client retries a 401 exactly once).

Secrets and tokens never appear in ``repr``/``str``, logs or exception messages: providers
keep them in attributes whose names start with ``_`` and define ``__repr__`` without them,
and token-endpoint errors report only the OAuth ``error`` code, not the response body.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from typing import Callable, Mapping, Optional

import requests

from transforms.fhir.retry import SYSTEM_CLOCK, Clock

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AuthError(Exception):
    """Could not obtain a token. ``error_type`` follows the reference's ErrorType values."""

    error_type = "AuthenticationError"
    stage = "fhir_write"


class Auth:
    """No authentication (the local test server, or a server behind a trusted proxy)."""

    def headers(self) -> dict:
        return {}

    def invalidate(self) -> None:
        """Forget the current token (after a 401); no-op when there is none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


NoAuth = Auth


class StaticBearerAuth(Auth):
    """A bearer token given by the operator. Cannot refresh, so a 401 stays a 401."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("empty bearer token")
        self._token = token

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self._token}"}


class _RefreshingTokenAuth(Auth):
    """Caches one access token and fetches a new one ``refresh_margin`` seconds before expiry.

    Thread-safe: Beam may run several DoFn threads sharing one client per worker.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK, refresh_margin: float = 300.0):
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._token: Optional[str] = None
        self._expires_at = 0.0  # clock.monotonic() time
        self._lock = threading.Lock()
        self.fetch_count = 0  # for tests/metrics: how many tokens we fetched

    def _fetch(self) -> tuple[str, float]:
        """Return (access_token, lifetime_seconds)."""
        raise NotImplementedError

    def headers(self) -> dict:
        with self._lock:
            now = self._clock.monotonic()
            if self._token is None or now >= self._expires_at - self._refresh_margin:
                token, lifetime = self._fetch()
                self.fetch_count += 1
                self._token = token
                self._expires_at = now + float(lifetime)
            return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        with self._lock:
            self._token = None


def _post_token_request(session: requests.Session, token_url: str, form: Mapping[str, str],
                        timeout: float) -> tuple[str, float]:
    """POST an OAuth2 token request; return (access_token, expires_in). Never echoes secrets."""
    try:
        resp = session.post(token_url, data=dict(form), timeout=timeout,
                            headers={"Accept": "application/json"})
    except requests.RequestException as err:
        raise AuthError(f"token endpoint unreachable: {type(err).__name__}") from None
    if resp.status_code != 200:
        code = ""
        try:
            code = str(resp.json().get("error", ""))[:64]
        except ValueError:
            pass
        raise AuthError(f"token endpoint answered {resp.status_code} {code}".strip())
    try:
        body = resp.json()
        token = body["access_token"]
    except (ValueError, KeyError, TypeError):
        raise AuthError("token endpoint answer has no access_token") from None
    return token, float(body.get("expires_in", 3600))


class ClientCredentialsAuth(_RefreshingTokenAuth):
    """OAuth2 client credentials (Azure AD / Entra ID for Azure Health Data Services).

    The scope for Azure is ``{fhir_url}/.default``; the token endpoint
    ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token``. Use
    :meth:`from_env` so the secret comes from the environment, never from a command line.
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str,
                 session: Optional[requests.Session] = None, clock: Clock = SYSTEM_CLOCK,
                 refresh_margin: float = 300.0, timeout: float = 30.0):
        super().__init__(clock, refresh_margin)
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self._client_secret = client_secret
        self._session = session or requests.Session()
        self._timeout = timeout

    @classmethod
    def from_env(cls, fhir_url: str, scope: Optional[str] = None,
                 env: Mapping[str, str] = os.environ, **kw) -> "ClientCredentialsAuth":
        """Read ``AZURE_TENANT_ID``/``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET`` (the names
        azure-identity's EnvironmentCredential uses); ``AZURE_TOKEN_URL`` overrides the
        endpoint (other OAuth servers, tests)."""
        missing = [k for k in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET") if not env.get(k)]
        token_url = env.get("AZURE_TOKEN_URL")
        if not token_url:
            if not env.get("AZURE_TENANT_ID"):
                missing.append("AZURE_TENANT_ID")
            else:
                token_url = (f"https://login.microsoftonline.com/{env['AZURE_TENANT_ID']}"
                             "/oauth2/v2.0/token")
        if missing:
            raise AuthError("missing environment variables: " + ", ".join(missing))
        return cls(token_url, env["AZURE_CLIENT_ID"], env["AZURE_CLIENT_SECRET"],
                   scope or fhir_url.rstrip("/") + "/.default", **kw)

    def _fetch(self) -> tuple[str, float]:
        return _post_token_request(self._session, self.token_url, {
            "grant_type": "client_credentials", "client_id": self.client_id,
            "client_secret": self._client_secret, "scope": self.scope}, self._timeout)

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self.token_url!r}, client_id={self.client_id!r}, scope={self.scope!r})"


class GoogleAdcAuth(_RefreshingTokenAuth):
    """Google Application Default Credentials (Cloud Healthcare API FHIR stores).

    ``credentials`` may be injected (tests, or explicit service-account credentials);
    otherwise ``google.auth.default`` finds them (env var, gcloud, metadata server).
    google-auth knows the expiry; we refresh when it says invalid or expiring soon.
    """

    SCOPE = "https://www.googleapis.com/auth/cloud-platform"

    def __init__(self, credentials=None, scopes=(SCOPE,), clock: Clock = SYSTEM_CLOCK,
                 refresh_margin: float = 300.0, request_factory: Optional[Callable] = None):
        super().__init__(clock, refresh_margin)
        if credentials is None:
            import google.auth
            credentials, _ = google.auth.default(scopes=list(scopes))
        self._credentials = credentials
        self._request_factory = request_factory

    def _fetch(self) -> tuple[str, float]:
        import google.auth.exceptions
        if self._request_factory is None:
            import google.auth.transport.requests
            request = google.auth.transport.requests.Request()
        else:
            request = self._request_factory()
        try:
            self._credentials.refresh(request)
        except google.auth.exceptions.GoogleAuthError as err:
            raise AuthError(f"Google credentials refresh failed: {type(err).__name__}") from None
        expiry = getattr(self._credentials, "expiry", None)  # naive UTC datetime
        if expiry is not None:
            lifetime = (expiry.replace(tzinfo=None) - _utcnow_naive()).total_seconds()
        else:
            lifetime = 3600.0
        return self._credentials.token, max(0.0, lifetime)

    def __repr__(self) -> str:
        return f"GoogleAdcAuth(credentials={type(self._credentials).__name__})"


def _utcnow_naive():
    """google-auth keeps ``expiry`` as a naive UTC datetime; compare like with like."""
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jwt(claims: dict, private_key_pem: bytes, alg: str, kid: Optional[str] = None,
             jku: Optional[str] = None) -> str:
    """Compact JWS with RS384 or ES384 using ``cryptography`` (already a google-auth
    dependency, so no PyJWT). ES384 signatures are converted from DER to JOSE's raw r||s."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    if jku:
        header["jku"] = jku
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     _b64url(json.dumps(claims, separators=(",", ":")).encode())).encode("ascii")
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if alg == "RS384":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA384())
    elif alg == "ES384":
        der = key.sign(signing_input, ec.ECDSA(hashes.SHA384()))
        r, s = utils.decode_dss_signature(der)
        sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    else:
        raise ValueError(f"unsupported SMART signing algorithm {alg!r} (RS384 or ES384)")
    return signing_input.decode("ascii") + "." + _b64url(sig)


class SmartBackendAuth(_RefreshingTokenAuth):
    """SMART Backend Services: client_credentials with a signed JWT client assertion
    (iss=sub=client_id, aud=token endpoint, exp<=5 min, unique jti)."""

    def __init__(self, token_url: str, client_id: str, private_key_pem: bytes, scope: str,
                 alg: str = "RS384", kid: Optional[str] = None, jku: Optional[str] = None,
                 session: Optional[requests.Session] = None, clock: Clock = SYSTEM_CLOCK,
                 refresh_margin: float = 60.0, timeout: float = 30.0,
                 epoch: Callable[[], float] = time.time):
        super().__init__(clock, refresh_margin)
        if alg not in ("RS384", "ES384"):
            raise ValueError(f"unsupported SMART signing algorithm {alg!r} (RS384 or ES384)")
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self.alg = alg
        self.kid = kid
        self.jku = jku
        self._private_key_pem = private_key_pem
        self._session = session or requests.Session()
        self._timeout = timeout
        self._epoch = epoch

    def assertion(self) -> str:
        now = int(self._epoch())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex}
        return sign_jwt(claims, self._private_key_pem, self.alg, self.kid, self.jku)

    def _fetch(self) -> tuple[str, float]:
        return _post_token_request(self._session, self.token_url, {
            "grant_type": "client_credentials", "scope": self.scope,
            "client_assertion_type": JWT_BEARER_ASSERTION,
            "client_assertion": self.assertion()}, self._timeout)

    def __repr__(self) -> str:
        return (f"SmartBackendAuth(token_url={self.token_url!r}, client_id={self.client_id!r}, "
                f"alg={self.alg!r}, scope={self.scope!r})")


#: the ``--fhir-auth`` kinds (``auth_from_options``)
AUTH_KINDS = ("none", "bearer", "azure", "google", "smart")


def auth_from_options(kind: str, fhir_url: str, env: Mapping[str, str] = os.environ,
                      **kw) -> Auth:
    """Build the provider named by a pipeline option.

    kinds: ``none``; ``bearer`` (token from ``FHIR_BEARER_TOKEN``); ``azure`` (see
    :meth:`ClientCredentialsAuth.from_env`); ``google`` (ADC); ``smart`` (``SMART_TOKEN_URL``,
    ``SMART_CLIENT_ID``, ``SMART_PRIVATE_KEY_FILE``, optional ``SMART_KID``, ``SMART_ALG``,
    ``SMART_SCOPE`` default ``system/*.write system/*.read``).
    """
    kind = (kind or "none").lower()
    if kind == "none":
        return Auth()
    if kind == "bearer":
        token = env.get("FHIR_BEARER_TOKEN")
        if not token:
            raise AuthError("missing environment variable FHIR_BEARER_TOKEN")
        return StaticBearerAuth(token)
    if kind in ("azure", "entra", "client_credentials"):
        return ClientCredentialsAuth.from_env(fhir_url, env=env, **kw)
    if kind == "google":
        return GoogleAdcAuth(**kw)
    if kind == "smart":
        missing = [k for k in ("SMART_TOKEN_URL", "SMART_CLIENT_ID", "SMART_PRIVATE_KEY_FILE")
                   if not env.get(k)]
        if missing:
            raise AuthError("missing environment variables: " + ", ".join(missing))
        with open(env["SMART_PRIVATE_KEY_FILE"], "rb") as f:
            pem = f.read()
        return SmartBackendAuth(env["SMART_TOKEN_URL"], env["SMART_CLIENT_ID"], pem,
                                env.get("SMART_SCOPE", "system/*.write system/*.read"),
                                alg=env.get("SMART_ALG", "RS384"), kid=env.get("SMART_KID"), **kw)
    raise ValueError(f"unknown FHIR auth kind {kind!r} ({', '.join(AUTH_KINDS)})")
