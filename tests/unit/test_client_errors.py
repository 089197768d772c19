"""The client's error mapping: tritonclient's and gRPC's exceptions → typed errors with code and field (no server)."""
import asyncio
import pickle

import pytest
from tritonclient.utils import InferenceServerException

from svd_contract.tensors import inputs as contract_inputs
from svd_triton import (AsyncSVDClient, DeadlineExceededError, InvalidRequestError, RequestCancelledError, ServerError,
                        SVDClient, SVDClientError, UnauthorizedError, UnavailableError)
from svd_triton.errors import map_error

INPUTS = set(contract_inputs("svd_xt"))
REFUSAL = "NUM_FRAMES: num_frames=99 is out of range; accepted: 2–25"


@pytest.mark.parametrize("message,status,kind,code,field", [
    (REFUSAL, "400", InvalidRequestError, "INVALID_ARG", "num_frames"),  # HTTP
    (REFUSAL, "StatusCode.INVALID_ARGUMENT", InvalidRequestError, "INVALID_ARG", "num_frames"),  # gRPC
    ("IMAGE_BYTES: not a readable PNG, JPEG or WebP file", "400", InvalidRequestError, "INVALID_ARG", "image_bytes"),
    ("CONTROL: unknown action 'explode'; accepted: state, prewarm, pin, release", "StatusCode.INVALID_ARGUMENT",
     InvalidRequestError, "INVALID_ARG", "control"),
    ("in ensemble: input 'X' has no shape", "400", InvalidRequestError, "INVALID_ARG", None),  # names no input
    ("NOT_AN_INPUT: something", "400", InvalidRequestError, "INVALID_ARG", None),
    ("This API is restricted, expecting header 'authorization'", "403", UnauthorizedError, "PERMISSION_DENIED", None),
    ("This protocol is restricted, expecting header 'triton-grpc-protocol-authorization'", "StatusCode.UNAVAILABLE",
     UnauthorizedError, "UNAUTHENTICATED", None),  # decided by the message: the class's code
    ("no token", "401", UnauthorizedError, "UNAUTHENTICATED", None),
    ("Request for unknown model: 'svd_xt' has no available versions", "StatusCode.UNAVAILABLE", UnavailableError,
     "UNAVAILABLE", None),
    ("Request for unknown model: 'svd_xt' is not found", "StatusCode.NOT_FOUND", UnavailableError, "UNAVAILABLE", None),
    ("Request for unknown model: 'nope' is not found", "400", InvalidRequestError, "INVALID_ARG", None),  # 400 first
    ("request cancelled: the client went away", "StatusCode.CANCELLED", RequestCancelledError, "CANCELLED", None),
    ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", DeadlineExceededError, "DEADLINE_EXCEEDED", None),
    ("gateway timeout", "504", DeadlineExceededError, "DEADLINE_EXCEEDED", None),
    ("not enough memory: 1024×1024, 25 frames", "StatusCode.UNAVAILABLE", UnavailableError, "UNAVAILABLE", None),
    ("model not ready", "503", UnavailableError, "UNAVAILABLE", None),
    ("generation failed; the server log has the details", "StatusCode.INTERNAL", ServerError, "INTERNAL", None),
    ("generation failed; the server log has the details", "500", ServerError, "INTERNAL", None),
    ("resource exhausted", "StatusCode.RESOURCE_EXHAUSTED", ServerError, "RESOURCE_EXHAUSTED", None),
    ("teapot", "418", ServerError, "INTERNAL", None),
    (REFUSAL, None, ServerError, "INTERNAL", "num_frames"),  # sent on a stream: no code, the field still read
])
def test_inference_server_exceptions_map_to_class_code_and_field(message, status, kind, code, field):
    error = map_error(InferenceServerException(message, status=status), INPUTS)
    assert type(error) is kind
    assert (error.code, error.field) == (code, field)
    assert str(error) == message  # what clients see is the server's message, unchanged


class FakeRpcError(Exception):
    """grpc's own RpcError, as a stream or channel raises it unwrapped."""

    def __init__(self, name, details):
        self.name, self.text = name, details

    def code(self):
        return type("StatusCode", (), {"name": self.name})()

    def details(self):
        return self.text


@pytest.mark.parametrize("name,kind,code,message,field", [
    ("INVALID_ARGUMENT", InvalidRequestError, "INVALID_ARG", f"INVALID_ARGUMENT: {REFUSAL}", "num_frames"),
    ("CANCELLED", RequestCancelledError, "CANCELLED", "CANCELLED: Locally cancelled", None),
    ("DEADLINE_EXCEEDED", DeadlineExceededError, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED: Deadline Exceeded", None),
    ("UNAUTHENTICATED", UnauthorizedError, "UNAUTHENTICATED", "UNAUTHENTICATED: no key", None),
    ("PERMISSION_DENIED", UnauthorizedError, "PERMISSION_DENIED", "PERMISSION_DENIED: wrong key", None),
    ("INTERNAL", ServerError, "INTERNAL", "INTERNAL: oops", None),
    ("UNAVAILABLE", UnavailableError, "UNAVAILABLE", "server not reachable (gRPC UNAVAILABLE)", None),
])
def test_grpc_rpc_errors_map_by_their_code(name, kind, code, message, field):
    details = {"INVALID_ARGUMENT": REFUSAL, "CANCELLED": "Locally cancelled", "DEADLINE_EXCEEDED": "Deadline Exceeded",
               "UNAUTHENTICATED": "no key", "PERMISSION_DENIED": "wrong key", "INTERNAL": "oops",
               "UNAVAILABLE": "failed to connect to all addresses; ipv4:10.0.0.7:8001"}[name]
    error = map_error(FakeRpcError(name, details), INPUTS)
    assert (type(error), error.code, str(error), error.field) == (kind, code, message, field)


def test_transport_errors_and_our_own_pass_through_typed():
    timeout = map_error(asyncio.TimeoutError())
    assert type(timeout) is DeadlineExceededError and timeout.code == "DEADLINE_EXCEEDED"
    assert str(timeout) == "no answer within the client's timeout"
    refused = map_error(ConnectionRefusedError(111, "Connection refused"))
    assert type(refused) is UnavailableError and refused.code == "UNAVAILABLE"
    assert str(refused).startswith("server not reachable: ")
    ours = InvalidRequestError("unknown parameter 'guidance'", field="guidance")
    assert map_error(ours) is ours
    assert type(map_error(TypeError("image must be a path"))) is ServerError


def test_every_class_has_its_code_and_errors_survive_pickling():
    assert [kind("x").code for kind in (SVDClientError, InvalidRequestError, UnauthorizedError, UnavailableError,
                                        ServerError, RequestCancelledError, DeadlineExceededError)] == [
        "UNKNOWN", "INVALID_ARG", "UNAUTHENTICATED", "UNAVAILABLE", "INTERNAL", "CANCELLED", "DEADLINE_EXCEEDED"]
    assert SVDClientError("x").field is None
    copy = pickle.loads(pickle.dumps(InvalidRequestError(REFUSAL, code="INVALID_ARG", field="num_frames")))
    assert (type(copy), str(copy), copy.code, copy.field) == (InvalidRequestError, REFUSAL, "INVALID_ARG", "num_frames")


METADATA = {"inputs": [{"name": "IMAGE_BYTES", "datatype": "BYTES"}, {"name": "NUM_FRAMES", "datatype": "INT32"},
                       {"name": "SEED", "datatype": "INT64"}]}


class FakeTriton:
    """A tritonclient client whose inference fails with `error`."""

    def __init__(self, error):
        self.error, self.calls = error, []

    def get_model_metadata(self, model, **kwargs):
        self.calls.append(("metadata", model))
        return METADATA

    def get_model_config(self, model, **kwargs):
        return {"config": {"name": model}}

    def is_model_ready(self, model, **kwargs):
        raise self.error

    def infer(self, model, inputs, **kwargs):
        self.calls.append(("infer", model, sorted(i.name() for i in inputs)))
        raise self.error


class AsyncFakeTriton(FakeTriton):
    async def get_model_metadata(self, model, **kwargs):
        return super().get_model_metadata(model, **kwargs)

    async def get_model_config(self, model, **kwargs):
        return super().get_model_config(model, **kwargs)

    async def is_model_ready(self, model, **kwargs):
        return super().is_model_ready(model, **kwargs)

    async def infer(self, model, inputs, **kwargs):
        return super().infer(model, inputs, **kwargs)


def test_both_clients_raise_the_same_typed_error_from_a_refusal():
    refusal = InferenceServerException(REFUSAL, status="400")
    svd = SVDClient("localhost:1")
    svd._client = FakeTriton(refusal)
    with pytest.raises(InvalidRequestError, match="^NUM_FRAMES: ") as sync_error:
        svd.generate(b"png", num_frames=99, seed=3)
    assert svd._client.calls == [("metadata", "svd_xt"), ("infer", "svd_xt", ["IMAGE_BYTES", "NUM_FRAMES", "SEED"])]
    assert not svd.ready()

    async def run():
        client = AsyncSVDClient("localhost:1")
        client._client = AsyncFakeTriton(refusal)
        with pytest.raises(InvalidRequestError) as caught:
            await client.generate(b"png", num_frames=99)
        assert not await client.ready()
        return caught.value

    async_error = asyncio.run(run())
    for error in (sync_error.value, async_error):
        assert (str(error), error.code, error.field) == (REFUSAL, "INVALID_ARG", "num_frames")


def test_the_client_refuses_unknown_or_mistyped_parameters_naming_them():
    svd = SVDClient("localhost:1")
    svd._client = FakeTriton(AssertionError("never sent"))
    with pytest.raises(InvalidRequestError, match="unknown parameter 'guidance'; accepted: num_frames, seed") as unknown:
        svd.generate(b"png", guidance=2.0)
    with pytest.raises(InvalidRequestError, match="num_frames='many' is not a valid INT32") as mistyped:
        svd.generate(b"png", num_frames="many")
    assert (unknown.value.field, mistyped.value.field) == ("guidance", "num_frames")
    with pytest.raises(SVDClientError, match="exactly one"):
        svd.generate(b"png", prompt="a cat")
