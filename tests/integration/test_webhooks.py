"""Webhooks from a real gateway to a receiver on loopback: signed events in order, the events filter,
bounded retries of a failing receiver, and the allow-list that keeps webhooks off private addresses."""
from __future__ import annotations

import base64
import json
import time

import pytest
from replicate.exceptions import ReplicateError
from replicate.webhook import WebhookSigningSecret, Webhooks

from tests.support.gateways import replicate_client
from tests.support.webhooks import Receiver

SMALL = {"num_frames": 4, "width": 64, "height": 64, "num_inference_steps": 3}


@pytest.fixture(scope="module")
def receiver():
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture(scope="module")
def gateway_options():
    return {"webhook_allow": ("127.0.0.1/32",), "webhook_attempts": 3, "webhook_backoff": 0.2}


@pytest.fixture
def client(gateway):
    return replicate_client(gateway)


def image(png: bytes) -> str:
    return base64.b64encode(png).decode()


def test_signed_events_arrive_in_order(client, receiver, sample_png):
    secret = client.webhooks.default.secret()
    prediction = client.predictions.create(version="any", input={"image": image(sample_png), **SMALL},
                                           webhook=f"{receiver.url}/all")
    prediction.wait()
    deliveries = receiver.wait_for("/all", 1)
    deadline = time.monotonic() + 30
    while [body["status"] for _, body in deliveries].count("succeeded") < 2 and time.monotonic() < deadline:  # output, completed
        deliveries = receiver.wait_for("/all", len(deliveries) + 1, 1)
    for headers, body in deliveries:
        Webhooks.validate(headers=headers, body=json.dumps(body), secret=WebhookSigningSecret(key=secret.key), tolerance=300)
    statuses = [body["status"] for _, body in deliveries]
    assert statuses[0] == "processing" and statuses[-1] == "succeeded" and statuses[-2] == "succeeded"
    assert set(statuses[1:-2]) <= {"processing"}  # logs events in between
    logs = [len(body["logs"]) for _, body in deliveries]
    assert logs == sorted(logs) and "denoising" in deliveries[-1][1]["logs"]
    assert deliveries[-1][1]["output"] and deliveries[-1][1]["id"] == prediction.id


def test_a_tampered_body_fails_validation(client, receiver, sample_png):
    secret = client.webhooks.default.secret()
    client.predictions.create(version="any", input={"image": image(sample_png), **SMALL},
                              webhook=f"{receiver.url}/tamper", webhook_events_filter=["completed"]).wait()
    [(headers, body)] = receiver.wait_for("/tamper", 1)
    with pytest.raises(Exception, match="invalid"):
        Webhooks.validate(headers=headers, body=json.dumps({**body, "output": "https://evil.example/x.mp4"}),
                          secret=WebhookSigningSecret(key=secret.key))


def test_events_filter_sends_only_completed(client, receiver, sample_png):
    prediction = client.predictions.create(version="any", input={"image": image(sample_png), **SMALL},
                                           webhook=f"{receiver.url}/completed", webhook_events_filter=["completed"])
    prediction.wait()
    time.sleep(1)
    [(_, body)] = receiver.wait_for("/completed", 1)
    assert body["status"] == "succeeded" and body["id"] == prediction.id


def test_a_failing_receiver_is_retried_then_given_up(client, receiver, sample_png):
    client.predictions.create(version="any", input={"image": image(sample_png), **SMALL},
                              webhook=f"{receiver.url}/fail", webhook_events_filter=["completed"]).wait()
    attempts = receiver.wait_for("/fail", 3)
    time.sleep(2)  # backoff 0.2, 0.4 s: a fourth attempt would have come by now
    attempts = receiver.on("/fail")
    assert len(attempts) == 3
    assert len({headers["webhook-id"] for headers, _ in attempts}) == 1  # one message, delivered again


@pytest.mark.parametrize("target", ["http://10.1.2.3/hook", "http://[::1]:9/hook", "http://192.168.0.10/hook", "ftp://example.com/x",
                                    "http://169.254.169.254/latest/meta-data"])
def test_targets_outside_the_allow_list_are_refused(client, sample_png, target):
    with pytest.raises(ReplicateError) as raised:
        client.predictions.create(version="any", input={"image": image(sample_png), **SMALL}, webhook=target)
    assert raised.value.status == 422 and "webhook" in raised.value.detail
