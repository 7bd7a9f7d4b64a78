"""USPS Tracking API v3, played locally for parcels shipped with carrier ``USPS``.

Routes (under ``/usps``, so the source's ``base_url`` is ``http://127.0.0.1:PORT/usps``):

- ``POST /usps/oauth2/v3/token``: JSON client credentials -> a bearer token shaped
  like USPS's answer (``expires_in``/``issued_at`` as strings); wrong credentials ->
  401 ``{"error": "invalid_client", ...}``.
- ``GET /usps/tracking/v3/tracking/{trackingNumber}?expand=DETAIL``: the parcel's
  tracking document, events newest first; unknown number -> 404; bad token -> 401.
- ``GET /usps/sandbox/tracking-numbers``: **sandbox only, USPS has no such
  listing**: ``{"trackingNumbers": [...]}`` sorted, so a demo can poll what it
  shipped. It needs a token but does not count against the quota.

Every USPS call (token included) takes from a bucket of 60 per hour; when it is
empty the answer is 429 with ``Retry-After`` (seconds), as USPS documents.

Rendering: each lifecycle step adds scans (shipped: label ``MA``/``GX`` an hour
before the ``03`` acceptance at the origin; in transit: processed at a network
facility; delivered: ``OF`` then ``01`` at the destination). ``eventTimestamp``
is the scan location's wall clock with a misleading ``Z``; ``GMTTimestamp`` is
UTC; ``GMTOffset`` has no leading zero (``-5:00``).

The carrier changes its rendering midway, as USPS did (api-examples #15, PR #35):
scans at or after the ``code_switch_at`` config time (ISO 8601; unset = never)
use the newer era: label-created code ``MA`` becomes ``GX``, "processed" ``10``
becomes ``PC``, the ``03`` wording changes, ``actionCode``/``reasonCode`` appear,
``authorizedAgent`` turns from the string ``"false"`` into a boolean and
``GMTTimestamp`` gains milliseconds. Earlier scans keep the form they had.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.channels.usps import OAUTH_PATH, SANDBOX_LISTING_PATH, TRACKING_PATH
from orderpulse.connectors.sandbox.base import PollChannelSim
from orderpulse.connectors.sandbox.lifecycle import SimOrder

CHANNEL = names.CHANNEL_USPS
PREFIX = "/usps"
TOKEN_TTL_S = 28800  # USPS tokens live 8 hours


@dataclass(frozen=True)
class Place:
    city: str
    state: str | None  # null for network facilities
    zip: str | None
    tz: str


ORIGIN = Place("RICHMOND", "VA", "23227", "America/New_York")
HUB = Place("CHICAGO IL NETWORK DISTRIBUTION CENTER", None, None, "America/Chicago")
DESTINATIONS = (Place("CEDAR RAPIDS", "IA", "52404", "America/Chicago"),
                Place("DENVER", "CO", "80202", "America/Denver"),
                Place("PHOENIX", "AZ", "85004", "America/Phoenix"),
                Place("SEATTLE", "WA", "98101", "America/Los_Angeles"))

# step -> (eventCode, eventType, statusCategory), per era.
ERA_OLD: dict[str, tuple[str, str, str]] = {
    "label": ("MA", "Pre-Shipment Info Sent to USPS, USPS Awaiting Item", "Pre-Shipment"),
    "accepted": ("03", "Accepted at USPS Origin Facility", "Accepted"),
    "processed": ("10", "Arrived at USPS Regional Facility", "In Transit"),
    "out_for_delivery": ("OF", "Out for Delivery", "Out for Delivery"),
    "delivered": ("01", "Delivered, In/At Mailbox", "Delivered"),
}
ERA_NEW: dict[str, tuple[str, str, str]] = {
    **ERA_OLD,
    "label": ("GX", "Shipping Label Created, USPS Awaiting Item", "Pre-Shipment"),
    "accepted": ("03", "USPS in possession of item", "Accepted"),
    "processed": ("PC", "Processing Complete", "In Transit"),
}
# Lifecycle event -> scans it causes: (step, place role, time offset before the event).
SCANS: dict[str, list[tuple[str, str, timedelta]]] = {
    "shipped": [("label", "origin", timedelta(hours=1)), ("accepted", "origin", timedelta())],
    "in_transit": [("processed", "hub", timedelta())],
    "delivered": [("out_for_delivery", "destination", timedelta(hours=3)),
                  ("delivered", "destination", timedelta())],
}


def gmt_offset(local: datetime) -> str:
    """USPS's offset spelling: ``-5:00`` (no leading zero)."""
    minutes = int((local.utcoffset() or timedelta()).total_seconds() // 60)
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    return f"{sign}{minutes // 60}:{minutes % 60:02d}"


def render_event(step: str, at: datetime, place: Place, new_era: bool) -> dict[str, Any]:
    """One ``trackingEvents[]`` entry as USPS sends it."""
    code, wording, _category = (ERA_NEW if new_era else ERA_OLD)[step]
    local = at.astimezone(ZoneInfo(place.tz))
    utc = at.astimezone(UTC)
    event: dict[str, Any] = {
        "eventType": wording,
        "eventTimestamp": local.strftime("%Y-%m-%dT%H:%M:%SZ"),  # local, despite the Z
        "GMTTimestamp": (utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
                         if new_era else utc.strftime("%Y-%m-%dT%H:%M:%SZ")),
        "GMTOffset": gmt_offset(local),
        "eventCountry": None, "eventCity": place.city, "eventState": place.state,
        "eventZIP": place.zip, "firm": None, "name": None,
        "authorizedAgent": False if new_era else "false", "eventCode": code,
    }
    if new_era:
        event.update(actionCode=None, reasonCode=None)
    return event


def _summary(event: dict[str, Any], category: str) -> str:
    local = datetime.fromisoformat(event["eventTimestamp"].removesuffix("Z"))
    when = f"{local.strftime('%I:%M %p').lstrip('0').lower()} on {local.strftime('%B')} " \
           f"{local.day}, {local.year}"
    region = " ".join(p for p in (event["eventState"], event["eventZIP"]) if p)
    where = f"{event['eventCity']}, {region}" if region else event["eventCity"]
    if category == "Delivered":
        return f"Your item was delivered in or at the mailbox at {when} in {where}."
    return f"Your item's latest status: {event['eventType']} at {when} in {where}."


def render(order: SimOrder, events: list[dict[str, Any]], category: str) -> dict[str, Any]:
    """The ``expand=DETAIL`` document of a parcel (``events`` newest first)."""
    dest = DESTINATIONS[order.number % len(DESTINATIONS)]
    return {
        "trackingNumber": order.tracking_no, "statusCategory": category,
        "status": events[0]["eventType"], "statusSummary": _summary(events[0], category),
        "mailClass": "Priority Mail<SUP>&reg;</SUP>", "mailType": "DOMESTIC_MAIL",
        "serviceTypeCode": "14", "services": [],
        "originCity": ORIGIN.city, "originState": ORIGIN.state, "originZIP": ORIGIN.zip,
        "destinationCity": dest.city, "destinationState": dest.state,
        "destinationZIP": dest.zip, "emailEnabled": "true", "kahalaIndicator": "false",
        "proofOfDeliveryEnabled": "false", "restoreEnabled": "false", "RRAMEnabled": "false",
        "RREEnabled": "false", "trackingEvents": events,
    }


def _error(status: int, message: str, **headers: str) -> web.Response:
    body = {"apiVersion": "/tracking/v3", "error": {"code": str(status), "message": message}}
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda o: orjson.dumps(o).decode())


class UspsPollSim(PollChannelSim):
    channel = CHANNEL
    rate_per_s: ClassVar[float] = 60 / 3600
    burst: ClassVar[int] = 60

    def __init__(self, config: Mapping[str, str]) -> None:
        super().__init__(config)
        switch = config.get("code_switch_at")
        self.code_switch_at = datetime.fromisoformat(switch) if switch else None
        self.tokens: dict[str, float] = {}  # access token -> monotonic expiry

    def _new_era(self, at: datetime) -> bool:
        return self.code_switch_at is not None and at >= self.code_switch_at

    def _place(self, order: SimOrder, role: str) -> Place:
        if role == "origin":
            return ORIGIN
        return HUB if role == "hub" else DESTINATIONS[order.number % len(DESTINATIONS)]

    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        scans = SCANS.get(event)
        if order.carrier != "USPS" or not scans:
            return
        modified, doc = self.store.docs.get(order.tracking_no, (None, {}))
        events: list[dict[str, Any]] = list(doc.get("trackingEvents", []))
        category = doc.get("statusCategory", "")
        for step, role, before in scans:
            # Scans never precede the parcel's previous scan.
            at = max(now - before, modified or now - before).replace(microsecond=0)
            events.insert(0, render_event(step, at, self._place(order, role),
                                          self._new_era(at)))
            modified, category = at, ERA_OLD[step][2]
        assert modified is not None
        self.store.put(order.tracking_no, modified, render(order, events, category))

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PREFIX + OAUTH_PATH, self.token),
                web.get(PREFIX + TRACKING_PATH + "{number}", self.tracking),
                web.get(PREFIX + SANDBOX_LISTING_PATH, self.listing)]

    def _throttled(self) -> web.Response:
        return _error(429, "Too Many Requests: quota of API calls per hour exceeded",
                      **{"Retry-After": "60"})

    async def token(self, request: web.Request) -> web.Response:
        try:
            creds = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            creds = {}
        if not isinstance(creds, dict) or creds.get("grant_type") != "client_credentials" or \
                (creds.get("client_id"), creds.get("client_secret")) != (
                    self.config.get("client_id"), self.config.get("client_secret")):
            return web.json_response({"error": "invalid_client",
                                      "error_description": "Client authentication failed"},
                                     status=401)
        if not self.bucket.take():
            return self._throttled()
        token = uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + TOKEN_TTL_S
        return web.json_response({
            "access_token": token, "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)), "expires_in": str(TOKEN_TTL_S),
            "status": "approved", "scope": "addresses tracking", "issuer": "api.usps.com",
            "client_id": creds["client_id"], "application_name": "orderpulse-sandbox",
            "api_products": "[Public Access]", "public_key": ""})

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return self.tokens.get(token, 0.0) > time.monotonic()

    async def tracking(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Unauthorized: the access token is invalid or expired")
        if not self.bucket.take():
            return self._throttled()
        found = self.store.docs.get(request.match_info["number"])
        if found is None:
            return _error(404, "The tracking number may be incorrect or the status update "
                               "is not yet available.")
        doc = found[1]
        if request.query.get("expand", "SUMMARY").upper() != "DETAIL":
            doc = {k: v for k, v in doc.items() if k != "trackingEvents"}
        return web.json_response(doc, dumps=lambda o: orjson.dumps(o).decode())

    async def listing(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Unauthorized: the access token is invalid or expired")
        return web.json_response({"trackingNumbers": sorted(self.store.docs)})
