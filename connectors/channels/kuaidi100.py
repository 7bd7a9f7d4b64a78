"""Kuaidi100 (快递100): tracking pushes of a subscription (订阅推送), for Chinese carriers.

Facts relied on (Kuaidi100's API docs on apifox, project 514987; official SDK
kuaidi100-api/java-demo; see research notes):

- We subscribe a parcel with ``POST https://poll.kuaidi100.com/poll`` giving our
  ``callbackurl`` (``/webhooks/kuaidi100``) and a ``salt``. Kuaidi100 then POSTs
  ``application/x-www-form-urlencoded`` bodies with two fields: ``param`` (a JSON
  string) and ``sign`` = ``MD5(param + salt)``, 32 hex characters, upper case in the
  SDK ("MD5后转大写"). The MD5 is taken over the ``param`` string exactly as received
  (form-decoded, never re-serialized); the comparison ignores case.
- ``param``: ``status`` (``polling`` / ``shutdown`` = signed for, final / ``abort`` =
  monitoring stopped: no record in 3 days or no change in 60 days / ``updateall``),
  ``message``, ``autoCheck``, ``comOld``, ``comNew``, ``billstatus`` (deprecated), and
  ``lastResult``: ``{message, state, status, condition, ischeck, com, nu, data[]}``.
  ``data[]`` is the **full history, newest first** (a snapshot, not a delta): each
  ``{context, time, ftime ("yyyy-MM-dd HH:mm:ss", Asia/Shanghai, no offset), status,
  statusCode, areaCode?, areaName?...}``.
- ``state`` codes: base set 0 在途, 1 揽收, 2 疑难, 3 签收, 4 退签, 5 派件, 6 退回,
  7 转投, 8 清关, 14 拒签; the advanced set (subscribed with ``resultv2=4``) uses
  sub-states such as 101/102/103, 1001/1002/1003, 301..304, 401, 501. Codes are kept
  as strings; mapping them is the normalizer's job.
- Our answer to an accepted push: ``{"result":true,"returnCode":"200","message":"成功"}``;
  anything else makes Kuaidi100 push again later.
- No timestamp is signed, so there is no replay window: a replayed push repeats a
  snapshot and has the same ``source_event_id``.
- Kuaidi100 documents no verification ping; a GET/HEAD to the callback (a
  reachability probe) is answered with the ack.

Config keys: ``salt`` (required: the salt given at subscription), ``shop_id``
(optional label).

Records: one per push (the push carries the full history). ``key`` =
``lastResult.nu`` (the tracking number); ``source_topic`` = ``param.status``;
``source_event_id`` = ``f"{nu}:{latest ftime}:{state}"``; ``body`` = the original
form-encoded bytes (``content_type`` application/x-www-form-urlencoded: the
normalizer reads ``param`` from it). An unreadable push is still one record, keyed
by a hash of its bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import orjson

from orderpulse import names
from orderpulse.connectors.base import RawRecord, Reply, WebhookSource, content_id
from orderpulse.errors import SignatureError

CHANNEL = names.CHANNEL_KUAIDI100
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
ACK = Reply(200, '{"result":true,"returnCode":"200","message":"成功"}'.encode(),
            "application/json")


def sign(param: str, salt: str) -> str:
    """Kuaidi100's ``sign``: upper-case hex MD5 of ``param + salt``."""
    # MD5 is Kuaidi100's scheme, not our choice.
    return hashlib.md5((param + salt).encode()).hexdigest().upper()  # noqa: S324


def parse_form(body: bytes) -> dict[str, str]:
    """The form fields of a push; empty when the body is not UTF-8 form data."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return dict(parse_qsl(text, keep_blank_values=True))


def verify(salt: str, body: bytes) -> None:
    """Raise ``SignatureError`` unless ``sign`` is MD5(param + salt) of this push."""
    if not salt:
        raise SignatureError("no Kuaidi100 salt configured", reason="no_secret")
    form = parse_form(body)
    param, given = form.get("param"), form.get("sign", "").strip()
    if param is None or not given:
        raise SignatureError("push lacks param or sign", reason="missing_signature")
    if not hmac.compare_digest(sign(param, salt).encode(), given.upper().encode()):
        raise SignatureError("sign does not match param", reason="bad_signature")


def _param(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(parse_form(body).get("param", ""))
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def push_id(param: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(nu, f"{nu}:{latest ftime}:{state}")`` of a push, None without a tracking number."""
    result = param.get("lastResult")
    nu = result.get("nu") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(nu, str) or not nu:
        return None
    data = result.get("data")
    entries = data if isinstance(data, list) else []
    # Newest first by the docs, but the maximum does not depend on that.
    times = [d["ftime"] for d in entries if isinstance(d, dict) and isinstance(d.get("ftime"), str)]
    return nu, f"{nu}:{max(times, default='')}:{result.get('state', '')}"


class Kuaidi100Webhook(WebhookSource):
    channel = CHANNEL
    ack: ClassVar[Reply] = ACK

    def __init__(self, config: Mapping[str, str]) -> None:
        self.salt = config.get("salt", "")
        self.shop_id = config.get("shop_id", "")

    def handshake(self, method: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        return ACK if method.upper() in ("GET", "HEAD") else None

    def verify(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> None:
        verify(self.salt, body)

    def records(self, headers: Mapping[str, str], body: bytes) -> list[RawRecord]:
        param = _param(body)
        ids = push_id(param)
        if ids is None:
            digest = content_id(body)
            ids = (digest, digest)
        key, event_id = ids
        status = param.get("status")
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type",
                                                                       FORM_CONTENT_TYPE)
        return [RawRecord(key=key, source_topic=status if isinstance(status, str) else "",
                          body=body, shop_id=self.shop_id, source_event_id=event_id,
                          content_type=content_type)]
