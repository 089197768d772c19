"""Plain tritonclient calls (no svd_triton code) for both protocols, as any KServe v2 client makes them."""
from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.support import TOKEN

MODULES = {"http": http, "grpc": grpc}


def auth_headers(protocol: str, token: str | None = TOKEN) -> dict | None:
    if token is None:
        return None
    key = "authorization" if protocol == "http" else "triton-grpc-protocol-authorization"
    return {key: f"Bearer {token}"}


def client(server, protocol: str):
    url = server.http_url if protocol == "http" else server.grpc_url
    return MODULES[protocol].InferenceServerClient(url, **({"network_timeout": 300} if protocol == "http" else {}))


def make_inputs(protocol: str, tensors: dict[str, np.ndarray]):
    inputs = []
    for name, array in tensors.items():
        tensor = MODULES[protocol].InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def infer(server, protocol: str, tensors: dict[str, np.ndarray], outputs=("VIDEO", "SEED_USED"), token=TOKEN):
    requested = [MODULES[protocol].InferRequestedOutput(name) for name in outputs]
    return client(server, protocol).infer("svd_xt", make_inputs(protocol, tensors), outputs=requested,
                                          headers=auth_headers(protocol, token))


def scalar(value, dtype) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def text(value: str | bytes) -> np.ndarray:
    return np.array([[value.encode() if isinstance(value, str) else value]], dtype=np.object_)


def image_bytes(data: bytes) -> np.ndarray:
    return np.array([[data]], dtype=np.object_)


def small(**extra) -> dict[str, np.ndarray]:
    """Inputs that keep a CPU request well under a second: 64×64, 4 frames, 2 steps."""
    tensors = {"WIDTH": scalar(64, np.int32), "HEIGHT": scalar(64, np.int32),
               "NUM_FRAMES": scalar(4, np.int32), "NUM_INFERENCE_STEPS": scalar(2, np.int32)}
    tensors.update(extra)
    return tensors


def refused(call) -> InferenceServerException:
    try:
        call()
    except InferenceServerException as error:
        return error
    raise AssertionError("the server accepted a request it should have refused")


def is_invalid_argument(error: InferenceServerException) -> bool:
    return str(error.status()) in ("400", "StatusCode.INVALID_ARGUMENT")


def video_bytes(response) -> bytes:
    return bytes(response.as_numpy("VIDEO").reshape(-1)[0])
