"""Hostile HTTP against a real gateway (no Triton needed: every request here is refused before it):
authentication before any body byte is read, the body limit enforced on chunked bodies while reading,
a trickling body cut off, malformed JSON, base64 garbage, and a 10,000-field body."""
from __future__ import annotations

import json
import socket
import threading
import time

import psutil
import pytest
import requests

from tests.support import TOKEN

MIB = 1024 * 1024
LIMIT = 32 * MIB


@pytest.fixture(scope="module")
def gateway_triton():
    return None


@pytest.fixture(scope="module")
def gateway_options():
    return {"body_seconds": 2.0, "header_seconds": 2.0}


def send_chunked(gateway, headers: dict, total: int) -> tuple[int, int]:
    """POST a chunked body of up to `total` bytes, stopping as soon as an answer arrives.
    Returns (HTTP status, bytes of body sent)."""
    connection = socket.create_connection(("127.0.0.1", gateway.port))
    connection.settimeout(10)
    answer: list[bytes] = []
    reader = threading.Thread(target=lambda: answer.append(connection.recv(65536)), daemon=True)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    connection.sendall(f"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Transfer-Encoding: chunked\r\n{head}\r\n".encode())
    reader.start()
    chunk = b"%x\r\n" % MIB + b"{" + b" " * (MIB - 1) + b"\r\n"
    sent = 0
    try:
        while sent < total and not answer:
            connection.sendall(chunk)
            sent += MIB
    except OSError:  # the gateway answered and closed the connection
        pass
    reader.join(timeout=10)
    connection.close()
    return int(answer[0].split(b" ", 2)[1]), sent


def test_96_mib_chunked_without_token_is_401_before_the_body(gateway):
    status, sent = send_chunked(gateway, {}, 96 * MIB)
    assert status == 401 and sent < 16 * MIB  # answered on the headers; socket buffers absorb a little


def test_96_mib_chunked_with_token_is_413_at_the_limit_and_memory_stays_flat(gateway):
    process = psutil.Process()
    before = process.memory_info().rss
    status, sent = send_chunked(gateway, {"Authorization": f"Bearer {TOKEN}"}, 96 * MIB)
    grown = process.memory_info().rss - before
    assert status == 413 and LIMIT <= sent < LIMIT + 16 * MIB
    assert grown < 80 * MIB, f"the gateway's process grew by {grown / MIB:.0f} MiB"


def test_a_declared_oversized_body_is_413_without_reading(gateway):
    connection = socket.create_connection(("127.0.0.1", gateway.port))
    connection.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                       f"Content-Length: {96 * MIB}\r\n\r\n".encode())
    connection.settimeout(10)
    assert connection.recv(65536).startswith(b"HTTP/1.1 413")
    connection.close()


def test_a_trickling_body_is_cut_off(gateway):
    connection = socket.create_connection(("127.0.0.1", gateway.port))
    connection.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                       "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
    started = time.monotonic()
    connection.settimeout(20)
    answer = b""
    for _ in range(8):  # one byte a second, slower than the 2 s body deadline allows
        time.sleep(0.5)
        try:
            connection.sendall(b" ")
        except OSError:
            break
        connection.setblocking(False)
        try:
            answer += connection.recv(65536)
        except BlockingIOError:
            pass
        connection.setblocking(True)
        if answer:
            break
    connection.settimeout(20)
    answer += b"" if answer else connection.recv(65536)
    connection.close()
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 10


def trickle(connection: socket.socket, pieces: list[bytes], seconds: float) -> bytes:
    """Send `pieces` `seconds` apart; whatever the gateway answered meanwhile (b"" if nothing)."""
    connection.setblocking(False)
    answer = b""
    for piece in pieces:
        time.sleep(seconds)
        try:
            connection.sendall(piece)
            answer += connection.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            break
        if answer:
            break
    connection.settimeout(10)
    try:
        return answer or connection.recv(65536)
    finally:
        connection.close()


def test_trickling_headers_are_cut_off(gateway):
    """Slow-loris on the headers, which uvicorn alone never times out: one header line every 0.5 s."""
    connection = socket.create_connection(("127.0.0.1", gateway.port))
    started = time.monotonic()
    answer = trickle(connection, [b"GET /healthz HTTP/1.1\r\nHost: x\r\n"] + [b"X-Slow: 1\r\n"] * 20, 0.5)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 6


def test_a_silent_connection_is_closed_and_a_keep_alive_one_is_served_again(gateway):
    silent = socket.create_connection(("127.0.0.1", gateway.port))
    silent.settimeout(10)
    assert silent.recv(65536).startswith(b"HTTP/1.1 408")
    silent.close()
    with requests.Session() as session:  # the deadline restarts for each request of a connection
        for _ in range(2):
            assert session.get(gateway.url + "/openapi.json", timeout=10).status_code == 200
            time.sleep(1.5)


@pytest.mark.parametrize("path,status", [("/predict", 400), ("/v1/predictions", 422)])
def test_malformed_json_names_the_body(gateway, path, status):
    reply = requests.post(gateway.url + path, data=b'{"image": "abc", ', timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert reply.status_code == status and reply.json()["error"]["message"] == "body: not valid JSON"


def test_base64_garbage_is_400_naming_the_image(gateway):
    reply = requests.post(gateway.url + "/predict", json={"image": "%%%" * 1000}, timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 400 and reply.json()["error"]["field"] == "image"


def test_ten_thousand_fields_are_refused_naming_some(gateway):
    """The reply names a few fields and stays small, whatever the body holds."""
    body = {"input": {"input_image": "aGVsbG8=", **{f"field{i}": i for i in range(10_000)}}}
    reply = requests.post(gateway.url + "/v1/predictions", data=json.dumps(body), timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert reply.status_code == 422 and "input.field0" in reply.json()["detail"]
    assert len(reply.content) < 4096 and "input.field9999" not in reply.text


def test_health_and_docs_need_no_token_and_triton_down_is_503(gateway):
    assert requests.get(gateway.url + "/openapi.json", timeout=10).status_code == 200
    assert requests.get(gateway.url + "/healthz", timeout=10).status_code == 503
    assert requests.get(gateway.url + "/v1/predictions", timeout=10).status_code == 401
