"""The OpenAPI 3 document of the HTTP API, served at /openapi.json (and checked by
schemathesis against the live daemon in the tests)."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..qualify.verdict import VERDICTS

STATES = ["OK", "LAGGED", "UNREACHABLE", "UNKNOWN", "UNMONITORED"]
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
UNAUTH = {"401": ERROR}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _num(name: str, description: str, minimum: float | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number"}
    if minimum is not None:
        schema["minimum"] = minimum
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


# the verdict beside the chan_sip state (qualify/verdict.py): in Peer and in /peers/{name}/stats
VERDICT_FIELDS: dict[str, Any] = {
    "verdict": {"type": "string", "enum": list(VERDICTS)},
    "reason": {"type": "string"},
    "policy": {"type": "string"},
    "pending_toward": {"type": "string"},
    "pending_count": {"type": "integer"},
    "pending_of": {"type": "integer"},
    "flapping": {"type": "boolean"},
    "flap_penalty": {"type": "number"},
}
# a silence (maintenance window) holding the peer's notifications back: in Peer only
SILENCE_FIELDS: dict[str, Any] = {
    "silenced": {"type": "boolean"},
    "silence_id": {"type": ["integer", "null"]},
    "silenced_until": {"type": ["number", "null"]},
}

TARGET = {
    "type": "object",
    "required": ["label", "transport", "host", "port", "address", "state", "status", "lastms"],
    "properties": {
        "label": {"type": "string", "description": "`transport:host:port/address`"},
        "transport": {"type": "string"}, "host": {"type": "string"}, "port": {"type": "integer"},
        "address": {"type": "string"},
        "state": {"type": "string", "enum": STATES}, "status": {"type": "string"}, "lastms": {"type": "integer"},
        "rtt_ms": {"type": ["number", "null"]}, "last_change": {"type": ["number", "null"]},
        "last_qualify": {"type": ["number", "null"]}, "qualifies": {"type": "integer"},
        "timeouts": {"type": "integer"}, "transport_error": {"type": ["string", "null"]},
    },
}

# the last OPTIONS exchange of a watched peer (qualify/capture.py), bytes as display-safe text
_SENT = {"type": "object", "required": ["time", "to", "transmissions", "size", "bytes"], "properties": {
    "time": {"type": "number"}, "to": {"type": "string"}, "transmissions": {"type": "integer", "minimum": 1},
    "size": {"type": "integer"}, "bytes": {"type": "string"}}}
_RECEIVED = {"type": "object", "required": ["time", "from", "status", "size", "bytes"], "properties": {
    "time": {"type": "number"}, "from": {"type": "string"}, "status": {"type": "integer"},
    "size": {"type": "integer"}, "bytes": {"type": "string"}}}
EXCHANGE = {
    "type": "object",
    "required": ["peer", "watching_until", "request", "response", "rtt_ms"],
    "properties": {
        "peer": {"type": "string"},
        "watching_until": {"type": ["number", "null"]},
        "request": {"oneOf": [_SENT, {"type": "null"}]},
        "response": {"oneOf": [_RECEIVED, {"type": "null"}]},
        "rtt_ms": {"type": ["number", "null"]},
    },
}

#: [cluster]: a static peer another node qualifies (its owner on the hash ring; its state from a shared store)
FLEET_PEER = {
    "type": "object",
    "required": ["name", "node", "local"],
    "properties": {
        "name": {"type": "string"},
        "node": {"type": ["string", "null"], "description": "the node that qualifies it"},
        "local": {"type": "boolean", "enum": [False]},
        "state": {"type": "string", "enum": STATES},
        "lastms": {"type": "integer"},
        "maxms": {"type": "integer"},
        "rtt_ms": {"type": ["number", "null"]},
        "changed_at": {"type": ["number", "null"]},
        "updated_at": {"type": "number"},
        "stored_by": {"type": ["string", "null"], "description": "the node that wrote the stored state"},
    },
}

PEER = {
    "type": "object",
    "required": ["name", "status", "state", "lastms", "maxms", "qualifyfreq_ms", "host", "addr_port", "dynamic"],
    "properties": {
        "name": {"type": "string"},
        "status": {"type": "string", "description": "chan_sip string, e.g. `OK (12 ms)`"},
        "state": {"type": "string", "enum": STATES},
        "lastms": {"type": "integer"},
        "maxms": {"type": "integer"},
        "qualifyfreq_ms": {"type": "integer"},
        "keepalive_ms": {"type": "integer"},
        "host": {"type": "string"},
        "addr_ip": {"type": ["string", "null"]},
        "addr_port": {"type": "integer"},
        "dynamic": {"type": "boolean"},
        "transport": {"type": "string"},
        "nat": {"type": "array", "items": {"type": "string"}},
        "nat_detected": {"type": "boolean"},
        "acl": {"type": "boolean"},
        "defaultuser": {"type": ["string", "null"]},
        "fromuser": {"type": ["string", "null"]},
        "fromdomain": {"type": ["string", "null"]},
        "description": {"type": "string"},
        "context": {"type": "string"},
        "secret_set": {"type": "boolean"},
        "md5secret_set": {"type": "boolean"},
        "useragent": {"type": "string"},
        "regcontact": {"type": "string"},
        "regexten": {"type": "string"},
        "expire": {"type": "integer"},
        "rtt_ms": {"type": ["number", "null"]},
        "last_qualify": {"type": ["number", "null"]},
        "last_change": {"type": ["number", "null"]},
        "qualifies": {"type": "integer"},
        "silenced_until": {"type": ["number", "null"]},
        "timeouts": {"type": "integer"},
        "retransmissions": {"type": "integer"},
        "transport_error": {"type": ["string", "null"],
                            "description": "why the last TCP/TLS connection could not be opened, e.g. "
                                           "`certificate has expired`; null once the peer answers"},
        "qualify_source": {"type": ["string", "null"],
                           "description": "our address its qualify requests leave from (`qualify_source`): "
                                          "`ip:port` of that socket; null: the SIP socket"},
        "tls_cert_days_left": {"type": ["number", "null"],
                               "description": "TLS peers: days until the peer's verified certificate expires"},
        "flow_keepalive": {"type": ["object", "null"],
                           "description": "TCP/TLS peers with keepalive: RFC 5626 double-CRLF pings sent on "
                                          "the peer's connection, pongs received, rtt_s of the last pong, "
                                          "unanswered_s of a ping still waiting; null before the first ping"},
        "dns": {"type": ["string", "null"]},
        "dns_error": {"type": ["string", "null"]},
        "targets": {"type": ["array", "null"], "items": TARGET,
                    "description": "qualify_targets = all: each DNS target's own state; null otherwise"},
        **VERDICT_FIELDS,
        **SILENCE_FIELDS,
    },
}

_MS = {"type": ["number", "null"]}
STATS = {
    "type": "object",
    "required": ["peer", "verdict", "samples", "polls", "avg_ms", "std_ms", "est_ms", "dev_ms", "jitter_ms",
                 "loss_pct", "loss_window"],
    "properties": {
        "peer": {"type": "string"},
        **VERDICT_FIELDS,
        "samples": {"type": "integer"},
        "polls": {"type": "integer"},
        "avg_ms": _MS, "std_ms": _MS, "est_ms": _MS, "dev_ms": _MS, "jitter_ms": _MS,
        "loss_pct": {"type": "number"},
        "loss_window": {"type": "integer"},
        "rtt_windows": {"type": "object", "description": "5m, 1h, 24h: samples, p50_ms, p95_ms, p99_ms (nearest "
                        "rank; 1h and 24h from 5-minute histograms, within 2.47 %)",
                        "additionalProperties": {"type": "object", "required": ["samples"], "properties": {
                            "samples": {"type": "integer"}, "p50_ms": _MS, "p95_ms": _MS, "p99_ms": _MS}}},
        "uptime": {"type": "object", "description": "24h, 7d, 30d: pct (null: nothing observed), observed_s",
                   "additionalProperties": {"type": "object", "required": ["pct", "observed_s"], "properties": {
                       "pct": {"type": ["number", "null"]}, "observed_s": {"type": "number"}}}},
    },
}

# GET /api/v1/peers/{name} for a peer another node of the fleet qualifies ([cluster], docs/scaling.md)
REMOTE_PEER = {
    "type": "object",
    "required": ["name", "owner", "live", "local", "state", "peer_status", "lastms", "maxms", "rtt_ms", "changed_at",
                 "updated_at", "stored_by", "history"],
    "properties": {
        "name": {"type": "string"},
        "owner": {"type": ["string", "null"], "description": "the node that qualifies it"},
        "live": {"type": "boolean", "enum": [False], "description": "stored figures, not this node's"},
        "local": {"type": "boolean", "enum": [False]},
        "state": {"type": ["string", "null"], "enum": [*STATES, None]},
        "peer_status": {"type": ["string", "null"]},
        "lastms": {"type": ["integer", "null"]},
        "maxms": {"type": ["integer", "null"]},
        "rtt_ms": {"type": ["number", "null"]},
        "changed_at": {"type": ["number", "null"]},
        "updated_at": {"type": ["number", "null"]},
        "stored_by": {"type": ["string", "null"], "description": "the node that wrote the stored state"},
        "history": {"type": "array", "description": "its last transitions, oldest first (event stream objects)",
                    "items": {"type": "object"}},
    },
}

TRANSITION = {
    "type": "object",
    "required": ["time", "old", "new", "lastms", "maxms"],
    "properties": {
        "time": {"type": "number"},
        "old": {"type": "string", "enum": STATES},
        "new": {"type": "string", "enum": STATES},
        "lastms": {"type": "integer"}, "maxms": {"type": "integer"}, "rtt_ms": {"type": ["number", "null"]},
        "reason": {"type": ["string", "null"], "description": "UNREACHABLE because a connection failed: why"},
    },
}


SILENCE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "peer", "group", "until", "comment", "created"],
    "properties": {
        "id": {"type": "integer"}, "peer": {"type": ["string", "null"]}, "group": {"type": ["string", "null"]},
        "until": {"type": "number", "description": "UNIX time"}, "comment": {"type": "string"},
        "created": {"type": "number", "description": "UNIX time"},
    },
}


def _silence_for(key: str) -> dict[str, Any]:
    """POST /api/v1/silences: a peer's or a group's (the API also takes `until` as ISO 8601)."""
    other = "group" if key == "peer" else "peer"
    return {"type": "object", "required": [key, "until"], "not": {"required": [other]}, "properties": {
        key: {"type": "string", "minLength": 1}, "comment": {"type": "string"},
        "until": {"type": "number", "description": "UNIX time; 409 when not in the future"}}}


REGISTRATION: dict[str, Any] = {
    "type": "object",
    "required": ["peer", "contact", "address", "port", "transport", "expires_at", "expires_in"],
    "properties": {
        "peer": {"type": "string"}, "contact": {"type": "string"},
        "address": {"type": "string", "description": "where OPTIONS go (the source address when NAT applies)"},
        "port": {"type": "integer"}, "transport": {"type": "string", "enum": ["udp", "tcp", "tls", "ws", "wss"]},
        "useragent": {"type": "string"}, "path": {"type": "string"}, "call_id": {"type": "string"},
        "cseq": {"type": "integer"}, "nat": {"type": "boolean", "description": "NAT detected or forced"},
        "expires_at": {"type": "number", "description": "UNIX time"},
        "expires_in": {"type": "integer", "description": "seconds left"},
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "sipqualify API", "version": __version__,
                 "description": "Local HTTP API of the sipqualify daemon (docs/api.md)."},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Peer": PEER,
                "FleetPeer": FLEET_PEER,
                "RemotePeer": REMOTE_PEER,
                "Transition": TRANSITION,
            },
        },
        "paths": {
            "/healthz": {"get": {"security": [], "operationId": "healthz", "responses": {
                "200": _json({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}})}}},
            "/readyz": {"get": {"operationId": "readyz", "responses": {
                "200": _json({"type": "object", "required": ["ready", "checks"]}),
                "503": _json({"type": "object", "required": ["ready", "checks"], "properties": {
                    "errors": {"type": "object", "description": "per failing database: cause and since",
                               "additionalProperties": {"type": "object", "properties": {
                                   "cause": {"type": "string"}, "since": {"type": ["number", "null"]}}}}}},
                    "not ready"), **UNAUTH}}},
            "/api/v1/peers": {"get": {"operationId": "listPeers", "responses": {
                "200": _json({"type": "object", "required": ["peers"], "properties": {
                    "node": {"type": "string", "description": "[cluster]: this node's id"},
                    "peers": {"type": "array", "items": {"anyOf": [
                        {"$ref": "#/components/schemas/Peer"}, {"$ref": "#/components/schemas/FleetPeer"}]}}}}),
                **UNAUTH}}},
            "/api/v1/peers/{name}": {"get": {"operationId": "getPeer", "parameters": [NAME], "responses": {
                "200": _json({"anyOf": [{"$ref": "#/components/schemas/Peer"},
                                         {"$ref": "#/components/schemas/RemotePeer"}]}),
                "404": ERROR, "503": ERROR, **UNAUTH}}},
            "/api/v1/peers/{name}/qualify": {"post": {
                "operationId": "qualifyPeer", "parameters": [NAME, {
                    "name": "wait", "in": "query", "required": False, "schema": {"type": "string",
                                                                                 "enum": ["0", "1"]}}],
                "responses": {"200": _json({"type": "object", "required": ["peer"], "properties": {
                    "peer": {"type": "string"}, "status": {"type": "string"}, "queued": {"type": "boolean"},
                    "result": {"type": "object"}}}), "404": ERROR, "504": ERROR, **UNAUTH}}},
            "/api/v1/peers/{name}/silence": {"post": {
                "operationId": "silencePeer", "parameters": [NAME, _num("until", "UNIX time; absent or past: end")],
                "responses": {"200": _json({"type": "object", "required": ["peer", "silenced_until"], "properties": {
                    "peer": {"type": "string"}, "silenced_until": {"type": ["number", "null"]}}}),
                    "400": {"description": "bad parameter"}, "404": ERROR, **UNAUTH}}},
            "/api/v1/peers/{name}/capture": {"post": {
                "operationId": "capturePeer", "parameters": [NAME],
                "responses": {"200": _json({"type": "object", "required": ["peer", "watching_until"], "properties": {
                    "peer": {"type": "string"}, "watching_until": {"type": "number"}}}),
                    "404": ERROR, "429": ERROR, **UNAUTH}}},
            "/api/v1/peers/{name}/exchange": {"get": {
                "operationId": "peerExchange", "parameters": [NAME],
                "responses": {"200": _json(EXCHANGE), "404": ERROR, **UNAUTH}}},
            "/api/v1/peers/{name}/history": {"get": {
                "operationId": "peerHistory",
                "parameters": [NAME, _num("since", "UNIX time"), _num("until", "UNIX time"),
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1}}],
                "responses": {"200": _json({"type": "object", "required": ["peer", "transitions"], "properties": {
                    "peer": {"type": "string"},
                    "transitions": {"type": "array", "items": {"$ref": "#/components/schemas/Transition"}}}}),
                    "400": {"description": "bad parameter"}, **UNAUTH}}},
            "/api/v1/peers/{name}/rtt": {"get": {
                "operationId": "peerRtt",
                "parameters": [NAME, _num("since", "UNIX time"), _num("until", "UNIX time"),
                               {**_num("step", "bucket seconds"), "schema": {"type": "number",
                                                                             "exclusiveMinimum": 0.001}}],
                "responses": {"200": _json({"type": "object", "required": ["peer", "series"], "properties": {
                    "peer": {"type": "string"}, "since": {"type": "number"}, "until": {"type": "number"},
                    "step": {"type": "number"}, "series": {"type": "array", "items": {"type": "object"}}}}),
                    "400": {"description": "bad parameter"}, **UNAUTH}}},
            "/api/v1/peers/{name}/stats": {"get": {
                "operationId": "peerStats", "parameters": [NAME],
                "responses": {"200": _json(STATS), "404": ERROR, **UNAUTH}}},
            "/api/v1/overview": {"get": {
                "operationId": "overview",
                "description": "a page of peers for the dashboard: filtered, sorted and paged on the server",
                "parameters": [
                    {"name": "offset", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 1000000000}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "beats", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 100}},
                    {"name": "sort", "in": "query", "required": False, "schema": {"type": "string", "enum": [
                        "state", "name", "rtt", "changed", "-state", "-name", "-rtt", "-changed"]}},
                    {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "state", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "group", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object", "required": [
                    "total", "matched", "offset", "limit", "counts", "groups", "peers"], "properties": {
                    "total": {"type": "integer"}, "matched": {"type": "integer"}, "offset": {"type": "integer"},
                    "limit": {"type": "integer"},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "groups": {"type": "array", "items": {"type": "string"}},
                    "peers": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/Peer"}, {
                        "type": "object", "required": ["group", "beats"], "properties": {
                            "group": {"type": "string"},
                            "beats": {"type": "array", "items": {"type": "object", "required": [
                                "time", "rtt_ms", "status_code"], "properties": {
                                "time": {"type": "number"}, "rtt_ms": {"type": ["number", "null"]},
                                "status_code": {"type": ["integer", "null"]}}}}}}]}}}}),
                    "400": {"description": "bad parameter"}, **UNAUTH}}},
            "/api/v1/reload": {"post": {"operationId": "reload", "responses": {
                "200": _json({"type": "object", "required": ["added", "removed", "changed", "unchanged"]}),
                "400": ERROR, **UNAUTH}}},
            "/api/v1/silences": {
                "get": {"operationId": "listSilences", "responses": {
                    "200": _json({"type": "object", "required": ["silences"], "properties": {
                        "silences": {"type": "array", "items": SILENCE}}}), **UNAUTH}},
                "post": {"operationId": "addSilence", "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [_silence_for("peer"), _silence_for("group")]}}}},
                         "responses": {"201": _json(SILENCE), "400": ERROR, "404": ERROR,
                                       "409": _json({"$ref": "#/components/schemas/Error"}, "until is past"),
                                       **UNAUTH}}},
            "/api/v1/silences/{id}": {"delete": {
                "operationId": "deleteSilence",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object", "required": ["deleted"], "properties": {
                    "deleted": {"type": "integer"}}}), "404": ERROR, **UNAUTH}}},
            "/api/v1/registrations": {"get": {"operationId": "listRegistrations", "responses": {
                "200": _json({"type": "object", "required": ["registrations"], "properties": {
                    "registrations": {"type": "array", "items": REGISTRATION}}}), **UNAUTH}}},
            "/api/v1/pjsip": {"get": {"operationId": "pjsip", "parameters": [
                {"name": "aor", "in": "query", "required": False, "description": "only these AORs (repeatable)",
                 "schema": {"type": "string"}},
                {"name": "endpoint", "in": "query", "required": False,
                 "description": "only this endpoint's AORs, and its options", "schema": {"type": "string"}}],
                "responses": {
                "200": _json({"type": "object", "required": ["aors", "endpoints"], "properties": {
                    "aors": {"type": "array", "items": {"type": "object"}},
                    "endpoints": {"type": "array", "items": {"type": "object"}}}}), **UNAUTH}}},
            "/api/v1/status": {"get": {"operationId": "status", "responses": {
                "200": _json({"type": "object", "required": ["peers", "engine"]}), **UNAUTH}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {
                "200": {"description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}, **UNAUTH}}},
            "/probe": {"get": {
                "operationId": "probe",
                "parameters": [
                    {"name": "target", "in": "query", "required": True,
                     "schema": {"type": "string", "pattern": "^sip:127\\.0\\.0\\.1:[1-9][0-9]{3,4}$"}},
                    {"name": "module", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["sip_udp", "sip_tcp", "sip_udp_2xx", "sip_tcp_2xx"]}}],
                "responses": {"200": {"description": "probe metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "400": {"description": "bad parameter"}, **UNAUTH}}},
            "/events": {"get": {
                "operationId": "events",
                "description": "Server-Sent Events: committed transitions; resume with Last-Event-ID",
                "parameters": [{"name": "peer", "in": "query", "required": False, "schema": {"type": "string"}},
                               {"name": "status", "in": "query", "required": False, "schema": {"type": "string"}},
                               {"name": "include", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "also the live `verdict`, `latency`, `flap` and/or `watchdog` events "
                                               "(comma list)"},
                               {"name": "fleet", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]},
                                "description": "[cluster] with a PostgreSQL store: every node's transitions"},
                               {"name": "Last-Event-ID", "in": "header", "required": False,
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
                "responses": {"200": {"description": "event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **UNAUTH}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {
                "200": _json({"type": "object"}), **UNAUTH}}},
        },
    }
