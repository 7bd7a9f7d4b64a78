-- Order-health views for SREs. docs/health-metrics.md states each formula, its
-- units and the tables it reads; tests/integration/test_health_views.py checks
-- each against figures computed by hand. Times are seconds, rates are shares
-- (0..1). CREATE OR REPLACE: a view holds no data, so a later file may redefine
-- one and re-applying the DDL is still idempotent.
--
-- Conventions shared by the views:
--   open            status NOT IN ('COMPLETED', 'CANCELLED')
--   backlog         status IN ('PAID', 'APPROVED', 'PACKING'): paid, not shipped
--   shipped         status IN ('SHIPPED', 'IN_TRANSIT', 'DELIVERED', 'COMPLETED')
--   channel events  order_events rows not flagged AUTO_CLOSED (the pipeline's own
--                   cancellation of an unpaid order is not something a channel said;
--                   the consistency index is the exception, see there)

-- Backlog: days of work queued = backlog orders / orders shipped per day over
-- the trailing 7 days. An order counts as shipped on the day of its first
-- shipped event if it was seen in an earlier state first (a store sale born
-- COMPLETED was never work in the queue); carrier scans are shipments, not orders.
CREATE OR REPLACE VIEW {db}.health_backlog AS
WITH 7 AS window_days
SELECT
    backlog_orders,
    shipped_orders,
    window_days AS capacity_window_days,
    shipped_orders / window_days AS capacity_orders_per_day,
    if(shipped_orders = 0, NULL, backlog_orders / (shipped_orders / window_days)) AS backlog_days
FROM
(
    SELECT count() AS backlog_orders
    FROM {db}.order_states FINAL
    WHERE status IN ('PAID', 'APPROVED', 'PACKING')
) AS backlog
CROSS JOIN
(
    SELECT count() AS shipped_orders
    FROM
    (
        SELECT
            order_id,
            min(event_time) AS first_seen,
            minIf(event_time, status IN ('SHIPPED', 'IN_TRANSIT', 'DELIVERED', 'COMPLETED')) AS first_shipped,
            countIf(status IN ('SHIPPED', 'IN_TRANSIT', 'DELIVERED', 'COMPLETED')) AS shipped_events
        FROM {db}.order_events FINAL
        WHERE event_type != 'CARRIER_SCAN'
        GROUP BY order_id
    )
    WHERE shipped_events > 0
      AND first_shipped > first_seen
      AND first_shipped > now64(3) - toIntervalDay(window_days)
      AND first_shipped <= now64(3)
) AS capacity;

-- Stuck-order rate by state and channel: stuck orders in a state / open orders
-- of the channel (the gauges' stuck / open), so a channel's rows add up to its
-- stuck rate. Only states holding open orders appear.
CREATE OR REPLACE VIEW {db}.health_stuck_rate AS
SELECT
    state,
    channel,
    stuck_orders,
    open_in_state,
    open_orders,
    stuck_orders / open_orders AS stuck_rate
FROM
(
    SELECT
        status AS state,
        channel,
        countIf(stuck) AS stuck_orders,
        count() AS open_in_state,
        sum(count()) OVER (PARTITION BY channel) AS open_orders
    FROM {db}.order_states FINAL
    WHERE status NOT IN ('COMPLETED', 'CANCELLED')
    GROUP BY status, channel
)
ORDER BY channel, state;

-- State delay by channel: the channel's event time to the pipeline's processing
-- time, p50 and p95 (exact, linearly interpolated). Events flagged
-- FUTURE_EVENT_TIME (a channel clock ahead of ours) would be negative delays.
CREATE OR REPLACE VIEW {db}.health_state_delay AS
SELECT
    channel,
    count() AS events,
    quantileExactInclusive(0.5)(delay_s) AS p50_s,
    quantileExactInclusive(0.95)(delay_s) AS p95_s
FROM
(
    SELECT channel, dateDiff('millisecond', event_time, processed_at) / 1000 AS delay_s
    FROM {db}.order_events FINAL
    WHERE NOT has(flags, 'AUTO_CLOSED') AND NOT has(flags, 'FUTURE_EVENT_TIME')
)
GROUP BY channel
ORDER BY channel;

-- Duplicate rate by channel: duplicate records / (distinct accepted channel
-- events + duplicate records), i.e. the share of deliveries that were repeats.
CREATE OR REPLACE VIEW {db}.health_duplicate_rate AS
SELECT
    channel,
    sum(accepted) AS accepted_events,
    sum(repeats) AS duplicate_events,
    duplicate_events / (accepted_events + duplicate_events) AS duplicate_rate
FROM
(
    SELECT channel, uniqExact(event_id) AS accepted, toUInt64(0) AS repeats
    FROM {db}.order_events FINAL
    WHERE NOT has(flags, 'AUTO_CLOSED')
    GROUP BY channel
    UNION ALL
    SELECT channel, toUInt64(0) AS accepted, count() AS repeats
    FROM {db}.duplicates FINAL
    GROUP BY channel
)
GROUP BY channel
ORDER BY channel;

-- Dead-letter rate by channel and reason: dead letters of (channel, reason) /
-- every record of the channel that got a verdict (distinct accepted channel
-- events + duplicates + dead letters). Dead letters without a channel (the
-- sink's own, a body with no readable channel) are channel 'unknown'.
CREATE OR REPLACE VIEW {db}.health_dead_letter_rate AS
SELECT
    letters.ch AS channel,
    letters.reason AS reason,
    letters.dead_letters AS dead_letters,
    totals.records AS channel_records,
    letters.dead_letters / totals.records AS dead_letter_rate
FROM
(
    SELECT ifNull(channel, 'unknown') AS ch, reason, count() AS dead_letters
    FROM {db}.dead_letters FINAL
    GROUP BY ch, reason
) AS letters
INNER JOIN
(
    SELECT ch, sum(n) AS records
    FROM
    (
        SELECT toString(channel) AS ch, uniqExact(event_id) AS n
        FROM {db}.order_events FINAL
        WHERE NOT has(flags, 'AUTO_CLOSED')
        GROUP BY ch
        UNION ALL
        SELECT toString(channel) AS ch, count() AS n
        FROM {db}.duplicates FINAL
        GROUP BY ch
        UNION ALL
        SELECT ifNull(channel, 'unknown') AS ch, count() AS n
        FROM {db}.dead_letters FINAL
        GROUP BY ch
    )
    GROUP BY ch
) AS totals ON letters.ch = totals.ch
ORDER BY channel, reason;

-- Oversell attempts prevented: reservations (RESERVE_REJECTED) and payments
-- (COMMIT_REJECTED) refused because the stock was not there. A refusal with
-- reason 'not_in_preferred_warehouse' is a routing round moving on to the next
-- warehouse, not an oversell attempt.
CREATE OR REPLACE VIEW {db}.health_oversell_prevented AS
SELECT
    countIf(kind = 'RESERVE_REJECTED') AS reserve_rejected,
    countIf(kind = 'COMMIT_REJECTED') AS commit_rejected,
    reserve_rejected + commit_rejected AS oversell_prevented
FROM {db}.inventory_events FINAL
WHERE kind IN ('RESERVE_REJECTED', 'COMMIT_REJECTED')
  AND reason != 'not_in_preferred_warehouse';

-- Phantom-reservation rate: units held by open reservations per unit still
-- sellable, over every SKU and warehouse's current level. NULL when nothing is
-- available (the ratio has no meaning there).
CREATE OR REPLACE VIEW {db}.health_phantom_reservations AS
SELECT
    sum(reserved) AS reserved_units,
    sum(available) AS available_units,
    if(available_units > 0, reserved_units / available_units, NULL) AS phantom_reservation_rate
FROM {db}.inventory_levels FINAL;

-- Refund processing time by channel, per order: the first event reporting a
-- refund asked for (REQUESTED or RETURN_PENDING) to the first reporting money
-- returned (PARTIAL or FULL). Orders refunded without a recorded request, or
-- whose refund is reported before the request, are left out.
CREATE OR REPLACE VIEW {db}.health_refund_time AS
SELECT
    channel,
    count() AS refunded_orders,
    quantileExactInclusive(0.5)(refund_s) AS p50_s,
    quantileExactInclusive(0.95)(refund_s) AS p95_s
FROM
(
    SELECT
        channel,
        order_id,
        minIf(event_time, refund_status IN ('REQUESTED', 'RETURN_PENDING')) AS requested_at,
        minIf(event_time, refund_status IN ('PARTIAL', 'FULL')) AS refunded_at,
        countIf(refund_status IN ('REQUESTED', 'RETURN_PENDING')) AS requests,
        countIf(refund_status IN ('PARTIAL', 'FULL')) AS refunds,
        dateDiff('millisecond', requested_at, refunded_at) / 1000 AS refund_s
    FROM {db}.order_events FINAL
    GROUP BY channel, order_id
    HAVING requests > 0 AND refunds > 0 AND refunded_at >= requested_at
)
GROUP BY channel
ORDER BY channel;

-- Fulfilment lead time by channel, per order: the first event seen paid (PAID,
-- APPROVED or PACKING: a polled channel may skip PAID) to the first shipped
-- event; p50, p95 and the share shipped within the 48 h target (target_s).
CREATE OR REPLACE VIEW {db}.health_fulfilment_lead_time AS
WITH 48 * 3600 AS target
SELECT
    channel,
    count() AS shipped_orders,
    quantileExactInclusive(0.5)(lead_s) AS p50_s,
    quantileExactInclusive(0.95)(lead_s) AS p95_s,
    target AS target_s,
    countIf(lead_s <= target) / count() AS within_target
FROM
(
    SELECT
        channel,
        order_id,
        minIf(event_time, status IN ('PAID', 'APPROVED', 'PACKING')) AS paid_at,
        minIf(event_time, status IN ('SHIPPED', 'IN_TRANSIT', 'DELIVERED', 'COMPLETED')) AS shipped_at,
        countIf(status IN ('PAID', 'APPROVED', 'PACKING')) AS paid_events,
        countIf(status IN ('SHIPPED', 'IN_TRANSIT', 'DELIVERED', 'COMPLETED')) AS shipped_events,
        dateDiff('millisecond', paid_at, shipped_at) / 1000 AS lead_s
    FROM {db}.order_events FINAL
    WHERE event_type != 'CARRIER_SCAN'
    GROUP BY channel, order_id
    HAVING paid_events > 0 AND shipped_events > 0 AND shipped_at >= paid_at
)
GROUP BY channel
ORDER BY channel;

-- Consistency index by channel: the share of orders whose latest reported
-- status (order_events, latest by event time, then processing time) equals the
-- pipeline's state (order_states FINAL). Orders in both tables only. A
-- quarantined event, or a state the sink has not landed yet, shows up here.
-- The pipeline's own AUTO_CLOSED cancellation counts as reported: it applies the
-- channel's auto-close rule, and a channel that never reports its close would
-- otherwise leave every unpaid order inconsistent for good.
CREATE OR REPLACE VIEW {db}.health_consistency AS
SELECT
    states.channel AS channel,
    count() AS orders,
    countIf(reported.channel_status = states.status) AS consistent_orders,
    consistent_orders / orders AS consistency_index
FROM
(
    SELECT order_id, channel, status
    FROM {db}.order_states FINAL
) AS states
INNER JOIN
(
    SELECT order_id, argMax(status, (event_time, processed_at)) AS channel_status
    FROM {db}.order_events FINAL
    GROUP BY order_id
) AS reported ON states.order_id = reported.order_id
GROUP BY channel
ORDER BY channel;
