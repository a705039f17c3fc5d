"""Webhook authentication: PagerDuty V3 signature vectors (rotation, tampering), Opsgenie and Alertmanager tokens.

Decision: hex digests are case-insensitive, so an uppercase `v1=` value is accepted (PagerDuty sends
lowercase; hex case carries no secret and rejecting it would only break a proxy that re-cases headers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from conftest import PD_NEXT_SECRET, PD_SECRET, WEBHOOKS, pd_headers, webhook
from pydantic import SecretStr

from worker.errors import WebhookRejected
from worker.settings import Settings
from worker.sources.base import Source
from worker.sources.registry import build_sources

HEADERS = json.loads((WEBHOOKS / "pagerduty" / "headers.json").read_text())
PD_FILES = sorted(HEADERS["files"])


def pagerduty(*secrets: str) -> Source:
    return build_sources(Settings.from_env({}, pagerduty_webhook_secrets=tuple(SecretStr(s) for s in secrets)))[
        "pagerduty"
    ]


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def refused(source: Source, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(WebhookRejected) as caught:
        source.authenticate(headers, body)
    assert caught.value.status == 401
    return caught.value.reason


def test_the_vectors_are_what_the_tests_assume() -> None:
    assert (HEADERS["secret_current"], HEADERS["secret_next"]) == (PD_SECRET, PD_NEXT_SECRET)
    assert len(PD_FILES) == 5
    for name in PD_FILES:
        body = webhook("pagerduty", name)
        assert hashlib.sha256(body).hexdigest() == HEADERS["files"][name]["body_sha256"]  # bytes untouched
        next_sig, current_sig = pd_headers(name, rotation=True)["X-PagerDuty-Signature"].split(",")
        assert (next_sig, current_sig) == (f"v1={sign(PD_NEXT_SECRET, body)}", f"v1={sign(PD_SECRET, body)}")


@pytest.mark.parametrize("name", PD_FILES)
def test_every_sample_verifies_with_the_current_secret(name: str) -> None:
    pagerduty(PD_SECRET).authenticate(pd_headers(name), webhook("pagerduty", name))


@pytest.mark.parametrize("name", PD_FILES)
@pytest.mark.parametrize("configured", [[PD_SECRET], [PD_NEXT_SECRET], [PD_NEXT_SECRET, PD_SECRET]])
def test_rotation_header_passes_with_either_secret_configured(name: str, configured: list[str]) -> None:
    pagerduty(*configured).authenticate(pd_headers(name, rotation=True), webhook("pagerduty", name))


def test_several_configured_secrets_any_one_matching_passes() -> None:
    name = "incident.triggered.json"
    body = webhook("pagerduty", name)
    pagerduty("old-one", "unrelated", PD_SECRET).authenticate(pd_headers(name), body)
    pagerduty(PD_SECRET, "later").authenticate(pd_headers(name), body)
    # Only the next secret configured, header signed with the current one only: refused.
    refused(pagerduty(PD_NEXT_SECRET), pd_headers(name), body)


@pytest.mark.parametrize("name", PD_FILES)
def test_one_changed_byte_anywhere_is_refused(name: str) -> None:
    body = webhook("pagerduty", name)
    source = pagerduty(PD_SECRET, PD_NEXT_SECRET)
    for position in (0, len(body) // 2, len(body) - 1):
        tampered = bytearray(body)
        tampered[position] ^= 0x01
        refused(source, pd_headers(name, rotation=True), bytes(tampered))
    refused(source, pd_headers(name), body + b"\n")  # even trailing whitespace is a different body


def test_non_ascii_bodies_are_signed_as_raw_utf8_bytes() -> None:
    body = webhook("pagerduty", "incident.annotated.json")
    assert any(b > 0x7F for b in body)
    text = body.decode("utf-8")
    reencoded = text.encode("latin-1", errors="replace")  # what a server decoding with the wrong charset would check
    source = pagerduty(PD_SECRET)
    source.authenticate(pd_headers("incident.annotated.json"), body)
    refused(source, pd_headers("incident.annotated.json"), reencoded)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "missing"),
        ("", "empty"),
        ("v1=", "empty v1"),
        ("sha256={sig}", "wrong scheme"),
        ("{sig}", "no scheme"),
        ("v0={sig}", "unknown version"),
        ("v1={sig}0", "one hex digit too many"),
        ("v1={short}", "truncated"),
        ("v1= {sig}", "space inside the value"),
        ("v1=" + "0" * 64, "all zeros"),
        ("v1=zz{rest}", "not hex"),
        ("v1=ü{rest}", "non-ASCII"),
    ],
)
def test_missing_or_malformed_signatures_are_refused(header: str | None, why: str) -> None:
    name = "incident.acknowledged.json"
    body = webhook("pagerduty", name)
    sig = sign(PD_SECRET, body)
    headers = pd_headers(name)
    if header is None:
        del headers["X-PagerDuty-Signature"]
    else:
        headers["X-PagerDuty-Signature"] = header.format(sig=sig, short=sig[:-2], rest=sig[2:])
    refused(pagerduty(PD_SECRET), headers, body)


def test_wrong_secret_is_refused_and_the_reason_reveals_nothing() -> None:
    name = "incident.resolved.json"
    reason = refused(pagerduty("not-the-secret"), pd_headers(name), webhook("pagerduty", name))
    assert "not-the-secret" not in reason and PD_SECRET not in reason


def test_uppercase_hex_is_accepted() -> None:
    name = "incident.priority_updated.json"
    body = webhook("pagerduty", name)
    headers = pd_headers(name)
    headers["X-PagerDuty-Signature"] = "v1=" + sign(PD_SECRET, body).upper()
    pagerduty(PD_SECRET).authenticate(headers, body)
    headers["X-PagerDuty-Signature"] = "v1=" + sign("wrong", body).upper()
    refused(pagerduty(PD_SECRET), headers, body)


def test_signature_among_unknown_schemes_and_spaces_still_matches() -> None:
    name = "incident.triggered.json"
    body = webhook("pagerduty", name)
    headers = pd_headers(name)
    headers["X-PagerDuty-Signature"] = f"v2=abc, v1={'0' * 64} ,  v1={sign(PD_SECRET, body)}"
    pagerduty(PD_SECRET).authenticate(headers, body)


def opsgenie(token: str = "og-token") -> Source:  # noqa: S107 - a test token
    return build_sources(Settings.from_env({"WORKER_OPSGENIE_WEBHOOK_TOKEN": token}))["opsgenie"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_opsgenie_token_in_the_custom_header_or_as_basic_auth_password() -> None:
    body = webhook("opsgenie", "Create.json")
    opsgenie().authenticate({"X-Worker-Token": "og-token"}, body)
    opsgenie().authenticate({"Authorization": basic("opsgenie", "og-token")}, body)
    opsgenie().authenticate({"Authorization": basic("", "og-token")}, body)
    opsgenie("p:w").authenticate({"Authorization": basic("u", "p:w")}, body)  # a colon inside the password


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Worker-Token": ""},
        {"X-Worker-Token": "og-token-but-longer"},
        {"X-Worker-Token": "OG-TOKEN"},
        {"Authorization": basic("og-token", "")},  # the token as the user name is not the password
        {"Authorization": basic("u", "wrong")},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer og-token"},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:og-token").decode()},
        {"Authorization": "Basic \u00e9"},  # a raw byte 0xE9 on the wire, as WSGI reads headers (was a 500)
    ],
)
def test_opsgenie_bad_credentials_are_refused(headers: dict[str, str]) -> None:
    refused(opsgenie(), headers, webhook("opsgenie", "Create.json"))


def test_alertmanager_bearer_token() -> None:
    am = build_sources(Settings.from_env({"WORKER_ALERTMANAGER_TOKEN": "am-token"}))["alertmanager"]
    body = webhook("alertmanager", "firing-single.json")
    am.authenticate({"Authorization": "Bearer am-token"}, body)
    am.authenticate({"Authorization": "bearer am-token"}, body)  # the scheme is case-insensitive (RFC 7235)
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer am-token-x"},
        {"Authorization": "Basic am-token"},
        {"Authorization": basic("x", "am-token")},
        {"X-Worker-Token": "am-token"},
    ):
        refused(am, headers, body)


def test_a_source_is_enabled_only_by_its_own_secret() -> None:
    assert {n: s.enabled() for n, s in build_sources(Settings.from_env({})).items()} == {
        "alertmanager": False,
        "opsgenie": False,
        "pagerduty": False,
    }
    env = {"WORKER_PAGERDUTY_WEBHOOK_SECRETS": " , ", "WORKER_OPSGENIE_WEBHOOK_TOKEN": "  "}
    assert not any(s.enabled() for s in build_sources(Settings.from_env(env)).values())  # blanks are unset
    env = {"WORKER_PAGERDUTY_WEBHOOK_SECRETS": f"{PD_SECRET}, {PD_NEXT_SECRET}"}
    sources = build_sources(Settings.from_env(env))
    assert sources["pagerduty"].enabled() and not sources["opsgenie"].enabled()
    sources["pagerduty"].authenticate(
        pd_headers("incident.triggered.json"), webhook("pagerduty", "incident.triggered.json")
    )


def test_secrets_stay_out_of_settings_repr() -> None:
    settings = Settings.from_env({"WORKER_PAGERDUTY_WEBHOOK_SECRETS": PD_SECRET, "WORKER_ALERTMANAGER_TOKEN": "am-x"})
    assert PD_SECRET not in repr(settings) and "am-x" not in repr(settings)


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 4096, 65536, 65537, 300_000])
def test_bodies_of_every_size_are_signed_as_one_hmac(size: int) -> None:
    # Webhooks are hashed in pieces under 2 KiB (to keep the GIL), large bodies in one go: same digest.
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    header = {"X-PagerDuty-Signature": f"v1={sign(PD_SECRET, body)}"}
    pagerduty(PD_SECRET).authenticate(header, body)
    tampered = body[:-1] + b"\x01" if body else b"x"
    assert "does not match" in refused(pagerduty(PD_SECRET), header, tampered)
