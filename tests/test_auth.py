"""Auth providers with injected fake token endpoints and clocks (no network)."""
import base64
import datetime
import json
import logging

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from transforms.fhir.auth import (JWT_BEARER_ASSERTION, Auth, AuthError, ClientCredentialsAuth,
                                  GoogleAdcAuth, SmartBackendAuth, StaticBearerAuth,
                                  auth_from_options)

from clock_fixtures import FakeClock

SECRET = "s3cr3t-value"


class FakeResponse:
    def __init__(self, status, body):
        self.status_code = status
        self._body = body

    def json(self):
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


class FakeTokenSession:
    """Records token requests; answers with tokens tok-1, tok-2, ..."""

    def __init__(self, expires_in=3600, status=200, body=None):
        self.calls = []
        self.expires_in = expires_in
        self.status = status
        self.body = body

    def post(self, url, data=None, timeout=None, headers=None):
        self.calls.append((url, dict(data)))
        if self.status != 200:
            return FakeResponse(self.status, self.body)
        return FakeResponse(200, {"access_token": f"tok-{len(self.calls)}",
                                  "expires_in": self.expires_in, "token_type": "Bearer"})


def b64d(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_no_auth_and_static_bearer():
    assert Auth().headers() == {}
    a = StaticBearerAuth("abc")
    assert a.headers() == {"Authorization": "Bearer abc"}
    a.invalidate()
    assert a.headers() == {"Authorization": "Bearer abc"}
    assert "abc" not in repr(a)
    with pytest.raises(ValueError):
        StaticBearerAuth("")


def test_client_credentials_caches_and_refreshes_before_expiry():
    clock, session = FakeClock(), FakeTokenSession(expires_in=3600)
    a = ClientCredentialsAuth("https://login/t", "cid", SECRET, "https://fhir/.default",
                              session=session, clock=clock, refresh_margin=300)
    assert a.headers() == {"Authorization": "Bearer tok-1"}
    clock.advance(3299)
    assert a.headers() == {"Authorization": "Bearer tok-1"}
    clock.advance(2)  # inside the 300 s margin before expiry
    assert a.headers() == {"Authorization": "Bearer tok-2"}
    a.invalidate()
    assert a.headers() == {"Authorization": "Bearer tok-3"}
    assert session.calls[0] == ("https://login/t", {
        "grant_type": "client_credentials", "client_id": "cid", "client_secret": SECRET,
        "scope": "https://fhir/.default"})
    assert a.fetch_count == 3
    assert SECRET not in repr(a) and "tok-" not in repr(a)


def test_client_credentials_from_env():
    env = {"AZURE_TENANT_ID": "tenant1", "AZURE_CLIENT_ID": "cid", "AZURE_CLIENT_SECRET": SECRET}
    a = ClientCredentialsAuth.from_env("https://ws-fhir.fhir.azurehealthcareapis.com/", env=env)
    assert a.token_url == "https://login.microsoftonline.com/tenant1/oauth2/v2.0/token"
    assert a.scope == "https://ws-fhir.fhir.azurehealthcareapis.com/.default"
    with pytest.raises(AuthError) as info:
        ClientCredentialsAuth.from_env("https://f", env={"AZURE_CLIENT_ID": "x"})
    assert str(info.value) == ("missing environment variables: AZURE_CLIENT_SECRET, "
                               "AZURE_TENANT_ID")
    assert info.value.error_type == "AuthenticationError"


def test_token_endpoint_error_reports_code_not_body(caplog):
    session = FakeTokenSession(status=401, body={"error": "invalid_client",
                                                 "error_description": f"bad secret {SECRET}"})
    a = ClientCredentialsAuth("https://login/t", "cid", SECRET, "s", session=session,
                              clock=FakeClock())
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as info:
        a.headers()
    assert str(info.value) == "token endpoint answered 401 invalid_client"
    assert SECRET not in caplog.text
    session = FakeTokenSession(status=200)
    session.post = lambda *a, **k: FakeResponse(200, {"token_type": "Bearer"})
    with pytest.raises(AuthError, match="no access_token"):
        ClientCredentialsAuth("u", "c", SECRET, "s", session=session).headers()


def _verify(jwt, public_key, alg):
    head, body, sig = jwt.split(".")
    signing_input = f"{head}.{body}".encode()
    raw = b64d(sig)
    if alg == "RS384":
        public_key.verify(raw, signing_input, padding.PKCS1v15(), hashes.SHA384())
    else:
        assert len(raw) == 96
        der = utils.encode_dss_signature(int.from_bytes(raw[:48], "big"),
                                         int.from_bytes(raw[48:], "big"))
        public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA384()))
    return json.loads(b64d(head)), json.loads(b64d(body))


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_signed_assertion(alg):
    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    session = FakeTokenSession(expires_in=300)
    a = SmartBackendAuth("https://ehr/token", "client-9", pem, "system/Observation.write",
                         alg=alg, kid="key-1", session=session, clock=FakeClock(),
                         epoch=lambda: 1_700_000_000)
    assert a.headers() == {"Authorization": "Bearer tok-1"}
    url, form = session.calls[0]
    assert url == "https://ehr/token"
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == JWT_BEARER_ASSERTION
    assert form["scope"] == "system/Observation.write"
    header, claims = _verify(form["client_assertion"], key.public_key(), alg)
    assert header == {"alg": alg, "typ": "JWT", "kid": "key-1"}
    assert {k: claims[k] for k in ("iss", "sub", "aud", "exp", "iat")} == {
        "iss": "client-9", "sub": "client-9", "aud": "https://ehr/token",
        "exp": 1_700_000_300, "iat": 1_700_000_000}
    assert len(claims["jti"]) == 32
    assert claims["jti"] != json.loads(b64d(a.assertion().split(".")[1]))["jti"]
    assert "BEGIN" not in repr(a)
    with pytest.raises(ValueError):
        SmartBackendAuth("u", "c", pem, "s", alg="HS256")


class FakeGoogleCredentials:
    def __init__(self):
        self.token = None
        self.expiry = None
        self.refreshes = 0

    def refresh(self, request):
        self.refreshes += 1
        self.token = f"g-{self.refreshes}"
        self.expiry = (datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
                       + datetime.timedelta(seconds=3600))


def test_google_adc_refreshes_from_credentials_expiry():
    creds, clock = FakeGoogleCredentials(), FakeClock()
    a = GoogleAdcAuth(credentials=creds, clock=clock, request_factory=lambda: None)
    assert a.headers() == {"Authorization": "Bearer g-1"}
    clock.advance(3000)
    assert a.headers() == {"Authorization": "Bearer g-1"}
    clock.advance(400)  # within 300 s of the 3600 s expiry
    assert a.headers() == {"Authorization": "Bearer g-2"}
    a.invalidate()
    assert a.headers() == {"Authorization": "Bearer g-3"}
    assert "g-3" not in repr(a)


def test_auth_from_options(tmp_path):
    assert type(auth_from_options("none", "https://f")) is Auth
    b = auth_from_options("bearer", "https://f", env={"FHIR_BEARER_TOKEN": "t"})
    assert b.headers() == {"Authorization": "Bearer t"}
    with pytest.raises(AuthError, match="FHIR_BEARER_TOKEN"):
        auth_from_options("bearer", "https://f", env={})
    az = auth_from_options("azure", "https://f", env={
        "AZURE_TOKEN_URL": "https://idp/token", "AZURE_CLIENT_ID": "c",
        "AZURE_CLIENT_SECRET": "s"})
    assert (az.token_url, az.scope) == ("https://idp/token", "https://f/.default")
    key = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    (tmp_path / "k.pem").write_bytes(key)
    smart = auth_from_options("smart", "https://f", env={
        "SMART_TOKEN_URL": "https://t", "SMART_CLIENT_ID": "c", "SMART_ALG": "ES384",
        "SMART_PRIVATE_KEY_FILE": str(tmp_path / "k.pem")})
    assert (smart.alg, smart.scope) == ("ES384", "system/*.write system/*.read")
    with pytest.raises(ValueError, match="unknown FHIR auth kind"):
        auth_from_options("kerberos", "https://f")


@pytest.mark.fhir_server
def test_expired_token_refreshed_on_401_through_proxy(fault_proxy, unique):
    """The server stops accepting tok-1 (revoked early); the client gets 401, the provider
    fetches tok-2, the request succeeds — one refresh, nothing lost."""
    from transforms.fhir.client import FhirClient
    from transforms.fhir.retry import RetryPolicy
    session = FakeTokenSession(expires_in=3600)
    auth = ClientCredentialsAuth("https://idp/token", "cid", SECRET, "s", session=session,
                                 clock=FakeClock())
    c = FhirClient(fault_proxy.url, auth=auth, retry_policy=RetryPolicy(initial_backoff=0.01))
    fault_proxy.require_tokens = {"tok-1"}
    c.put({"resourceType": "Observation", "id": f"a-{unique}", "status": "final",
           "code": {"text": "x"}})
    fault_proxy.require_tokens = {"tok-2"}
    r = c.put({"resourceType": "Observation", "id": f"b-{unique}", "status": "final",
               "code": {"text": "x"}})
    assert r.status == 200
    assert len(session.calls) == 2 and c.auth_refreshes == 1
    assert [s for _, _, s in fault_proxy.log] == [200, 401, 200]
