"""Kafka security for every client, from one source: the librdkafka keys of ``KAFKA_CONFIG``.

The confluent-kafka clients (webhook, poller, sink, lag exporter, topics, the streams
worker's output producer) take those keys as they are (``Settings.kafka_client_config``).
Faust consumes through aiokafka, which takes a credentials object instead of librdkafka
keys: ``faust_credentials`` translates the same keys, so the streams worker connects with
the same protocol, mechanism, user and trust as every other client, never with less.

Translated (librdkafka key -> aiokafka through Faust):

==========================================  ===============================================
``security.protocol``                       ``PLAINTEXT`` (None), ``SSL`` (SSLCredentials),
                                            ``SASL_PLAINTEXT`` / ``SASL_SSL`` (SASLCredentials)
``sasl.mechanisms`` (alias ``sasl.mechanism``)  ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``
``sasl.username``, ``sasl.password``        username, password
``ssl.ca.location`` / ``ssl.ca.pem``        trusted CA file or directory / PEM text
                                            (neither: the system's CA store, as librdkafka)
``ssl.certificate.location``,               client certificate (mutual TLS)
``ssl.key.location``, ``ssl.key.password``
``ssl.endpoint.identification.algorithm``   ``https`` (default: host name checked) or ``none``
``enable.ssl.certificate.verification``     ``true`` (default) or ``false`` (never in production)
==========================================  ===============================================

Any other ``sasl.*`` or ``ssl.*`` key (GSSAPI/OAUTHBEARER settings, keystores, in-memory
client keys, ...) is a ``ConfigError`` naming the key: the worker refuses to start rather
than connect with weaker settings than the other clients. Errors never carry a value.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

import faust
from faust.types.auth import CredentialsT

from orderpulse.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: The security keys translated; every other ``sasl.*``/``ssl.*`` key is refused.
TRANSLATED = frozenset({
    "security.protocol", "sasl.mechanisms", "sasl.mechanism", "sasl.username",
    "sasl.password", "ssl.ca.location", "ssl.ca.pem", "ssl.certificate.location",
    "ssl.key.location", "ssl.key.password", "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
})
_FALSE = ("false", "0", "no", "off")


def security_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a librdkafka config that decide how a client authenticates."""
    return {k: v for k, v in config.items()
            if k == "security.protocol" or k.startswith(("sasl.", "ssl.", "enable.ssl."))}


def faust_credentials(config: Mapping[str, Any]) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for a librdkafka config (``KAFKA_CONFIG``):
    None for plaintext, else SSL or SASL credentials with an SSL context when TLS is on."""
    unsupported = sorted(set(security_keys(config)) - TRANSLATED)
    if unsupported:
        raise ConfigError(f"KAFKA_CONFIG keys not translatable for the Faust worker: "
                          f"{', '.join(unsupported)} (see orderpulse/kafka_security.py)")
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"KAFKA_CONFIG security.protocol must be one of {PROTOCOLS}")
    context = ssl_context(config) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return _sasl(config, context)


def _sasl(config: Mapping[str, Any], context: ssl.SSLContext | None) -> CredentialsT:
    mechanism = str(config.get("sasl.mechanisms") or config.get("sasl.mechanism") or "").upper()
    if mechanism not in MECHANISMS:
        raise ConfigError(f"KAFKA_CONFIG sasl.mechanisms must be one of {MECHANISMS} for "
                          f"the Faust worker")
    username, password = config.get("sasl.username"), config.get("sasl.password")
    if not username or not password:
        raise ConfigError("KAFKA_CONFIG sasl.username and sasl.password are required")
    return faust.SASLCredentials(username=str(username), password=str(password),
                                 ssl_context=context, mechanism=mechanism)


def ssl_context(config: Mapping[str, Any]) -> ssl.SSLContext:
    """A client TLS context from the librdkafka ``ssl.*`` keys (see the module table)."""
    ca = config.get("ssl.ca.location")
    ca = None if ca == "probe" else ca  # librdkafka's "probe": the system store, our default
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=ca if ca and not os.path.isdir(ca) else None,
            capath=ca if ca and os.path.isdir(ca) else None,
            cadata=config.get("ssl.ca.pem") or None)
        if config.get("ssl.certificate.location"):
            context.load_cert_chain(config["ssl.certificate.location"],
                                    config.get("ssl.key.location") or None,
                                    config.get("ssl.key.password") or None)
    except (OSError, ssl.SSLError) as exc:  # FileNotFoundError is an OSError
        raise ConfigError(f"KAFKA_CONFIG ssl.* files cannot be loaded: "
                          f"{type(exc).__name__}") from exc
    if str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    if str(config.get("enable.ssl.certificate.verification", "true")).lower() in _FALSE:
        context.check_hostname = False  # must be off before CERT_NONE is allowed
        context.verify_mode = ssl.CERT_NONE
    return context
