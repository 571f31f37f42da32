"""The live API against its own OpenAPI document, with schemathesis (property-based)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks

from sipqualify.api.openapi import document

from .helpers import free_port

# /events is an endless stream and /probe sends SIP to its target (tested in test_metrics.py)
schema = schemathesis.openapi.from_dict(document()).exclude(path="/events").exclude(path="/probe")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    conf = tmp / "sip.conf"
    conf.write_text(f"[general]\nudpbindaddr=127.0.0.1:{free_port()}\nqualifygap=10\n"
                    f"[a]\ntype=peer\nhost=127.0.0.1\nport={free_port()}\nqualify=500\nqualifyfreq=5\n"
                    f"[b]\ntype=peer\nhost=127.0.0.1\nport={free_port()}\nqualify=no\n")
    port = free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf), "--api",
                             f"127.0.0.1:{port}", "--state-dir", str(tmp / "s")], stderr=subprocess.DEVNULL)
    token_file = tmp / "s" / "api-token"
    t_end = time.monotonic() + 30  # a deadline, not a count of tries: start-up is slow on a loaded machine
    while time.monotonic() < t_end:
        if token_file.exists():
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                pass
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", token_file.read_text().strip()
    proc.terminate()
    proc.wait(timeout=10)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, daemon: tuple[str, str]) -> None:
    base, token = daemon
    response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20)
    # every documented status, content type and response schema, no server error, valid data
    # never refused; invalid input we do not promise to refuse (unknown query parameters are
    # ignored) is left out, and so are malformed HTTP headers, which aiohttp itself answers 400
    case.validate_response(response, checks=[
        schemathesis.checks.not_a_server_error,
        checks.status_code_conformance, checks.content_type_conformance,
        checks.response_schema_conformance, checks.positive_data_acceptance,
    ])
