"""Route53 traffic shifts through boto3: weighted record weights and PRIMARY/SECONDARY failover.

Failover: Route53 answers with the PRIMARY while its health check passes. To send traffic to the
SECONDARY on purpose, operators flip the pair's roles (the SECONDARY record becomes PRIMARY and vice
versa) in one transactional batch, keeping every other field; `to="PRIMARY"` flips them back. The
change is planned first (exact batch shown to the approver) and applied only if the live records
still match what was planned.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from worker.errors import PermanentError, TransientError

_TRANSIENT_CODES = {
    "PriorRequestNotComplete",
    "Throttling",
    "ThrottlingException",
    "ServiceUnavailable",
    "InternalFailure",
    "RequestTimeout",
}


@dataclass(frozen=True)
class ChangePlan:
    hosted_zone_id: str
    record_name: str
    record_type: str
    change_batch: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    noop: bool
    state_fingerprint: str
    summary: str = field(default="")

    def describe(self) -> str:
        return self.summary


@dataclass(frozen=True)
class AppliedChange:
    change_id: str | None  # None: the records were already in the planned state
    noop: bool


class Route53Client:
    """Plan, apply and wait for Route53 record changes; raises only TransientError/PermanentError."""

    def __init__(self, client: Any):
        self._client = client

    @classmethod
    def from_settings(cls, *, endpoint_url: str | None = None, region: str = "us-east-1") -> Route53Client:
        """boto3's standard credential chain; `endpoint_url` (WORKER_AWS_ENDPOINT_URL) for moto or a proxy."""
        # Bounded calls (botocore's defaults are 60 s per read, 5 tries): a step's claim counts on its
        # wait for INSYNC plus a minute (`max_duration`), so each call ends well within that.
        config = Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 3, "mode": "standard"})
        return cls(boto3.client("route53", endpoint_url=endpoint_url or None, region_name=region, config=config))

    def _records(self, zone: str, name: str, record_type: str) -> list[dict[str, Any]]:
        name = _fqdn(name)
        records: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"HostedZoneId": zone, "StartRecordName": name, "StartRecordType": record_type}
        while True:
            page = self._call("list record sets", self._client.list_resource_record_sets, **kwargs)
            for record in page.get("ResourceRecordSets", []):
                if _fqdn(record["Name"]) == name and record["Type"] == record_type:
                    records.append(record)
            if not page.get("IsTruncated"):
                return records
            if _fqdn(page.get("NextRecordName", "")) != name or page.get("NextRecordType") != record_type:
                return records
            kwargs.update(StartRecordName=page["NextRecordName"], StartRecordType=page["NextRecordType"])
            if page.get("NextRecordIdentifier"):
                kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]

    def plan_set_weights(
        self, *, hosted_zone_id: str, record_name: str, record_type: str, weights: dict[str, int]
    ) -> ChangePlan:
        records = {r.get("SetIdentifier"): r for r in self._records(hosted_zone_id, record_name, record_type)}
        changes, before, after = [], {}, {}
        for identifier, weight in weights.items():
            if not 0 <= weight <= 255:
                raise PermanentError(f"weight for {identifier} must be between 0 and 255, got {weight}")
            record = records.get(identifier)
            if record is None:
                known = ", ".join(sorted(str(k) for k in records if k)) or "none"
                raise PermanentError(
                    f"no weighted record {identifier!r} for {record_name} {record_type} (known: {known})"
                )
            if "Weight" not in record:
                raise PermanentError(f"record {identifier!r} of {record_name} is not a weighted record")
            before[identifier], after[identifier] = record["Weight"], weight
            if record["Weight"] != weight:
                updated = copy.deepcopy(record)
                updated["Weight"] = weight
                changes.append({"Action": "UPSERT", "ResourceRecordSet": updated})
        text = ", ".join(f"{k} {before[k]}→{after[k]}" for k in weights)
        return self._plan(
            hosted_zone_id,
            record_name,
            record_type,
            changes,
            before,
            after,
            list(records.values()),
            f"set Route53 weights of {_fqdn(record_name)} {record_type}: {text}",
        )

    def plan_failover(
        self,
        *,
        hosted_zone_id: str,
        record_name: str,
        record_type: str,
        to: Literal["SECONDARY", "PRIMARY"],
        primary: str | None = None,
    ) -> ChangePlan:
        """Plan sending the pair's traffic to its original SECONDARY (or back to the original PRIMARY).

        `primary` is the set identifier of the record that serves in normal times (from the service
        catalog or the step). Without it, the identifiers must say it ("…primary…" / "…secondary…"):
        once the roles are flipped, Route53 itself no longer knows which record was the primary.
        """
        records = [r for r in self._records(hosted_zone_id, record_name, record_type) if "Failover" in r]
        if len(records) != 2 or {r["Failover"] for r in records} != {"PRIMARY", "SECONDARY"}:
            raise PermanentError(f"{record_name} {record_type} is not a PRIMARY/SECONDARY failover pair")
        # The pair is "failed over" while the record marked as the original secondary serves as PRIMARY.
        original = {r["SetIdentifier"]: r["Failover"] for r in records}
        serving = next(r["SetIdentifier"] for r in records if r["Failover"] == "PRIMARY")
        normal, standby = _original_roles(sorted(original), primary, f"{_fqdn(record_name)} {record_type}")
        want_serving = standby if to == "SECONDARY" else normal
        before = {"serving": serving, "roles": original}
        after = {"serving": want_serving}
        changes: list[dict[str, Any]] = []
        if serving != want_serving:
            # One transactional batch: both records UPSERTed (same name, type and SetIdentifier) with roles swapped.
            for record in records:
                flipped = copy.deepcopy(record)
                flipped["Failover"] = "SECONDARY" if record["Failover"] == "PRIMARY" else "PRIMARY"
                changes.append({"Action": "UPSERT", "ResourceRecordSet": flipped})
        return self._plan(
            hosted_zone_id,
            record_name,
            record_type,
            changes,
            before,
            after,
            records,
            f"fail {_fqdn(record_name)} {record_type} over so that {want_serving} serves as PRIMARY",
        )

    def _plan(
        self,
        zone: str,
        name: str,
        record_type: str,
        changes: list[dict[str, Any]],
        before: dict[str, Any],
        after: dict[str, Any],
        state: list[dict[str, Any]],
        summary: str,
    ) -> ChangePlan:
        return ChangePlan(
            hosted_zone_id=zone,
            record_name=_fqdn(name),
            record_type=record_type,
            change_batch={"Comment": "incident-worker", "Changes": changes},
            before=before,
            after=after,
            noop=not changes,
            state_fingerprint=_fingerprint(state),
            summary=summary,
        )

    def apply(self, plan: ChangePlan, *, comment: str, idempotency_token: str) -> AppliedChange:
        """Apply the planned batch if the records still match the plan; a no-op when already applied."""
        current = self._records(plan.hosted_zone_id, plan.record_name, plan.record_type)
        if plan.noop:
            return AppliedChange(None, noop=True)
        if _fingerprint(current) != plan.state_fingerprint:
            raise PermanentError(f"record sets of {plan.record_name} changed since the plan was approved")
        batch = {**plan.change_batch, "Comment": f"{comment} [{idempotency_token}]"[:256]}
        answer = self._call(
            "change record sets",
            self._client.change_resource_record_sets,
            HostedZoneId=plan.hosted_zone_id,
            ChangeBatch=batch,
        )
        return AppliedChange(answer["ChangeInfo"]["Id"], noop=False)

    def wait_insync(
        self,
        change_id: str,
        *,
        timeout: float,
        poll_interval: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Poll GetChange until INSYNC (changes generally propagate within 60 s)."""
        deadline = clock() + timeout
        while True:
            answer = self._call("get change", self._client.get_change, Id=change_id)
            if answer["ChangeInfo"]["Status"] == "INSYNC":
                return
            if clock() >= deadline:
                raise TransientError(f"Route53 change {change_id} not INSYNC after {timeout:.0f}s")
            sleep(poll_interval)

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _TRANSIENT_CODES or status >= 500:
                raise TransientError(f"Route53 {what}: {code}: {message}") from None
            raise PermanentError(f"Route53 {what}: {code}: {message}") from None
        except (EndpointConnectionError, BotoCoreError) as exc:
            raise TransientError(f"Route53 {what}: {exc}") from None


def _original_roles(identifiers: list[str], primary: str | None, pair: str) -> tuple[str, str]:
    """(original primary, original secondary) of a failover pair's two set identifiers."""
    if primary is not None:
        if primary not in identifiers:
            raise PermanentError(f"{pair}: no failover record {primary!r} (set identifiers: {', '.join(identifiers)})")
    else:
        named = [i for i in identifiers if "primary" in i.lower()] or [
            i for i in identifiers if "secondary" not in i.lower()
        ]
        if len(named) != 1:
            raise PermanentError(
                f"{pair}: cannot tell which of {', '.join(identifiers)} is the original primary; name it as "
                "primary_set_identifier in the service's route53_records (or the step)"
            )
        primary = named[0]
    return primary, next(i for i in identifiers if i != primary)


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _fingerprint(records: list[dict[str, Any]]) -> str:
    canonical = sorted(json.dumps(r, sort_keys=True, default=str) for r in records)
    return hashlib.sha256("\n".join(canonical).encode()).hexdigest()
