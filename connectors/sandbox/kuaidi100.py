"""Kuaidi100 subscription pushes, played locally for parcels of Chinese carriers.

For an order shipped with a carrier other than USPS, the lifecycle steps the
carrier sees (shipped, in transit, delivered) each cause one push: a form POST of
``param`` (JSON) and ``sign`` = upper-case MD5(param + salt), carrying the
parcel's full history newest first, times in Asia/Shanghai without offset. The
delivered push adds the 派件 (out for delivery) scan two hours before 签收 and
ends the subscription (``status`` "shutdown", ``ischeck`` "1").

Code change: pushes use Kuaidi100's advanced state set (``resultv2=4``: 103 已揽收,
1002 干线, 301 本人签收, plus ``areaCode``/``areaName``) instead of the base set
(1, 0, 5, 3) for orders whose number is a multiple of 5 (subscribed with
resultv2), and for every push at or after the ``code_switch_at`` config time
(ISO 8601; unset = never), so one parcel can switch code sets between two pushes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import orjson

from orderpulse import names
from orderpulse.connectors.channels.kuaidi100 import FORM_CONTENT_TYPE, parse_form, push_id, sign
from orderpulse.connectors.sandbox.base import Delivery, WebhookChannelSim
from orderpulse.connectors.sandbox.lifecycle import SimOrder

CHANNEL = names.CHANNEL_KUAIDI100
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
COMPANIES = {"SF": ("shunfeng", "顺丰速运"), "YTO": ("yuantong", "圆通速递"),
             "ZTO": ("zhongtong", "中通快递")}
ORIGIN = ("CN440300000000", "广东,深圳市", "深圳市")
AREAS = {"广东省": ("CN440100000000", "广东,广州市", "广州市"),
         "浙江省": ("CN330100000000", "浙江,杭州市", "杭州市"),
         "上海市": ("CN310000000000", "上海", "上海市"),
         "北京市": ("CN110000000000", "北京", "北京市"),
         "四川省": ("CN510100000000", "四川,成都市", "成都市")}
# scan -> (base code, advanced code, status name)
STATES = {"collected": ("1", "103", "揽收"), "transit": ("0", "1002", "在途"),
          "dispatch": ("5", "5", "派件"), "signed": ("3", "301", "签收")}
CARRIER_EVENTS = ("shipped", "in_transit", "delivered")


def _time(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def scans(order: SimOrder) -> list[tuple[datetime, str]]:
    """``(time, scan)`` of the parcel so far, oldest first."""
    out: list[tuple[datetime, str]] = []
    for at, event in order.history:
        if event not in CARRIER_EVENTS:
            continue
        if event == "shipped":
            out.append((at, "collected"))
        elif event == "in_transit":
            out.append((at, "transit"))
        else:
            out.append((max(at - timedelta(hours=2), out[-1][0] if out else at), "dispatch"))
            out.append((at, "signed"))
    return out


def _context(order: SimOrder, scan: str) -> str:
    company = COMPANIES[order.carrier][1]
    dest = AREAS.get(order.province, ORIGIN)[2]
    return {
        "collected": f"[{ORIGIN[2]}]{company} 已收取快件",
        "transit": f"快件已从【{ORIGIN[2]}转运中心】发出,正在发往【{dest}转运中心】",
        "dispatch": f"[{dest}]快件派送中,请保持电话畅通",
        "signed": f"[{dest}]快件已签收,签收人:本人,感谢使用{company}",
    }[scan]


def render_param(order: SimOrder, advanced: bool) -> dict[str, Any]:
    """The ``param`` object of a push of the parcel's scans so far."""
    data = []
    for at, scan in reversed(scans(order)):
        base, adv, name = STATES[scan]
        entry = {"time": _time(at), "ftime": _time(at), "context": _context(order, scan),
                 "status": name, "statusCode": adv if advanced else base}
        if advanced:  # area fields come only with resultv2
            area = ORIGIN if scan in ("collected", "transit") else AREAS.get(order.province,
                                                                             ORIGIN)
            entry.update(areaCode=area[0], areaName=area[1])
        data.append(entry)
    signed = bool(data) and data[0]["status"] == "签收"
    return {
        "status": "shutdown" if signed else "polling", "billstatus": "got", "message": "",
        "autoCheck": "0", "comOld": "", "comNew": "",
        "lastResult": {"message": "ok", "nu": order.tracking_no, "ischeck": "1" if signed else "0",
                       "condition": "00", "com": COMPANIES[order.carrier][0], "status": "200",
                       "state": data[0]["statusCode"] if data else "", "data": data},
    }


def form_body(param: str, salt: str) -> bytes:
    """The form-encoded push body, ``sign`` first as Kuaidi100 sends it."""
    return urlencode([("sign", sign(param, salt)), ("param", param)]).encode()


class Kuaidi100WebhookSim(WebhookChannelSim):
    channel = CHANNEL

    def __init__(self, config: Mapping[str, str]) -> None:
        super().__init__(config)
        switch = config.get("code_switch_at")
        self.code_switch_at = datetime.fromisoformat(switch) if switch else None

    def advanced(self, order: SimOrder, now: datetime) -> bool:
        """Whether this push uses the advanced state set (the simulated code change)."""
        switched = self.code_switch_at is not None and now >= self.code_switch_at
        return switched or order.number % 5 == 0

    def deliveries(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        if event not in CARRIER_EVENTS or order.carrier not in COMPANIES:
            return []
        param = render_param(order, self.advanced(order, now))
        text = orjson.dumps(param).decode()
        ids = push_id(param)
        assert ids is not None
        return [self._delivery(form_body(text, self.config.get("salt", "")), ids[1])]

    def _delivery(self, body: bytes, delivery_id: str) -> Delivery:
        return Delivery(CHANNEL, body, {"Content-Type": f"{FORM_CONTENT_TYPE};charset=UTF-8"},
                        delivery_id, content_type=FORM_CONTENT_TYPE)

    def forge(self, delivery: Delivery) -> Delivery:
        param = parse_form(delivery.body)["param"]
        return self._delivery(form_body(param, "not-the-salt"), delivery.delivery_id)
