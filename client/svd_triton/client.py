"""A thin, typed client for the svd_xt Triton model over HTTP or gRPC (sync and asyncio).

Input names are the parameter names in upper case (num_frames → NUM_FRAMES); their datatypes are
read once from the model's metadata, so the server's config.pbtxt stays the one contract.
"""
from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InvalidRequestError, ServerError, SVDClientError, UnauthorizedError, UnavailableError

MODEL_NAME = "svd_xt"
DEFAULT_TIMEOUT = 900.0  # seconds: an SVD-XT request takes tens of seconds, more when queued
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
IMAGE_INPUTS = ("IMAGE", "IMAGE_BYTES")
MAGIC = ((b"GIF8", 0, "gif"), (b"\x93NUMPY", 0, "frames"), (b"\x1a\x45\xdf\xa3", 0, "webm"),
         (b"ftyp", 4, "mp4"), (b"AVI ", 8, "avi"), (b"WEBP", 8, "webp"))


def sniff_format(data: bytes) -> str:
    """The video_format of an encoded result, from its first bytes."""
    for magic, offset, name in MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return name
    return "unknown"


@dataclass
class VideoResult:
    video: bytes
    seed: int
    seconds: float
    """Wall-clock time of the call, queueing included."""
    frames: np.ndarray | None = field(default=None, repr=False)
    """F×H×W×3 uint8, only when asked for with frames=True."""

    @property
    def video_format(self) -> str:
        return sniff_format(self.video)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.video)
        return path


def _module(protocol: str, asynchronous: bool):
    if protocol == "http":
        import tritonclient.http as sync_module
        import tritonclient.http.aio as async_module
    elif protocol == "grpc":
        import tritonclient.grpc as sync_module
        import tritonclient.grpc.aio as async_module
    else:
        raise ValueError(f"protocol={protocol!r}; accepted: http, grpc")
    return async_module if asynchronous else sync_module


def _image_tensor(image: Any) -> tuple[str, np.ndarray]:
    """IMAGE_BYTES for files and bytes (the server decodes them), IMAGE for arrays and PIL images."""
    if isinstance(image, (str, Path)):
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "IMAGE_BYTES", np.array([[bytes(image)]], dtype=np.object_)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        return "IMAGE", np.ascontiguousarray(image)[np.newaxis]
    raise TypeError(f"image must be a path, bytes, a PIL image or an H×W×3 uint8 array, not {type(image).__name__}")


def _map_error(error: Exception) -> SVDClientError:
    """tritonclient's and the transport's exceptions → our hierarchy, keeping the server's message."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, SVDClientError):
        return error
    if isinstance(error, (OSError, asyncio.TimeoutError)) and not isinstance(error, InferenceServerException):
        return UnavailableError(f"server not reachable or no answer in time: {error or type(error).__name__}")
    message = error.message() if isinstance(error, InferenceServerException) else str(error)
    status = str(error.status() if isinstance(error, InferenceServerException) else "")
    message = message or str(error)
    if "restricted" in message or any(code in status for code in ("401", "403", "PERMISSION_DENIED", "UNAUTHENTICATED")):
        return UnauthorizedError(message)
    if "INVALID_ARG" in status or status == "400":
        return InvalidRequestError(message)
    if any(code in status for code in ("UNAVAILABLE", "503", "DEADLINE_EXCEEDED", "504")):
        return UnavailableError(message)
    return ServerError(message)


class _Protocol:
    """What the sync and async clients share: connection settings and request/response conversion."""

    def __init__(self, url: str | None, protocol: str, token: str | None, timeout: float, model: str, asynchronous: bool):
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.model = model
        self.timeout = timeout
        # Triton's restricted gRPC protocol reads its key from a `triton-grpc-protocol-` prefixed header.
        header = "authorization" if protocol == "http" else "triton-grpc-protocol-authorization"
        self.headers = {header: f"Bearer {token}"} if token else None
        self.tc = _module(protocol, asynchronous)
        self.datatypes: dict[str, str] | None = None

    def client_kwargs(self) -> dict:
        if self.protocol == "http" and self.tc.__name__.endswith("aio"):
            return {"conn_timeout": self.timeout}
        if self.protocol == "http":
            return {"connection_timeout": self.timeout, "network_timeout": self.timeout}
        return {}

    def call_kwargs(self) -> dict:
        return {"headers": self.headers, **({"client_timeout": self.timeout} if self.protocol == "grpc" else {})}

    def learn_datatypes(self, metadata) -> None:
        inputs = metadata["inputs"] if isinstance(metadata, dict) else metadata.inputs
        self.datatypes = {i["name"] if isinstance(i, dict) else i.name: i["datatype"] if isinstance(i, dict) else i.datatype
                          for i in inputs}

    def build(self, image: Any, params: dict[str, Any], frames: bool):
        from tritonclient.utils import triton_to_np_dtype

        tensors = dict([_image_tensor(image)])
        for name, value in params.items():
            if value is None:
                continue
            input_name = name.upper()
            if input_name not in self.datatypes or input_name in IMAGE_INPUTS:
                accepted = ", ".join(n.lower() for n in self.datatypes if n not in IMAGE_INPUTS)
                raise InvalidRequestError(f"unknown parameter {name!r}; accepted: {accepted}")
            dtype = triton_to_np_dtype(self.datatypes[input_name])
            if dtype == np.object_:
                value = str(value).encode()
            try:
                tensors[input_name] = np.array([[value]], dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                raise InvalidRequestError(f"{name}={value!r} is not a valid {self.datatypes[input_name]}") from None
        inputs = []
        for input_name, array in tensors.items():
            tensor = self.tc.InferInput(input_name, list(array.shape), self.datatypes.get(input_name, "BYTES"))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        wanted = ["VIDEO", "SEED_USED"] + (["FRAMES"] if frames else [])
        outputs = [self.tc.InferRequestedOutput(name, **({"binary_data": True} if self.protocol == "http" else {}))
                   for name in wanted]
        return inputs, outputs

    @staticmethod
    def result(response, started: float, frames: bool) -> VideoResult:
        return VideoResult(
            video=bytes(response.as_numpy("VIDEO").reshape(-1)[0]),
            seed=int(response.as_numpy("SEED_USED").reshape(-1)[0]),
            seconds=time.perf_counter() - started,
            frames=response.as_numpy("FRAMES")[0] if frames else None,
        )


class SVDClient:
    """Blocking client: `SVDClient("localhost:8000").generate("cat.png", num_frames=14).save("cat.mp4")`."""

    def __init__(self, url: str | None = None, protocol: str = "http", token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, model: str = MODEL_NAME):
        self._p = _Protocol(url, protocol, token, timeout, model, asynchronous=False)
        self._client = self._p.tc.InferenceServerClient(self._p.url, **self._p.client_kwargs())

    def ready(self) -> bool:
        """True when the server is up and the model is loaded and ready (warm)."""
        try:
            return bool(self._client.is_model_ready(self._p.model, headers=self._p.headers))
        except Exception:
            return False

    def generate(self, image: Any, *, frames: bool = False, **params: Any) -> VideoResult:
        """Generate a video from `image` (path, bytes, PIL image or H×W×3 uint8 array).

        `params` are the model's optional inputs in lower case (num_frames=14, video_format="webm", ...);
        frames=True also returns the raw frames.
        """
        started = time.perf_counter()
        try:
            if self._p.datatypes is None:
                self._p.learn_datatypes(self._metadata())
            inputs, outputs = self._p.build(image, params, frames)
            response = self._client.infer(self._p.model, inputs, outputs=outputs, **self._p.call_kwargs())
        except Exception as error:
            raise _map_error(error) from None
        return self._p.result(response, started, frames)

    def _metadata(self):
        if self._p.protocol == "grpc":
            return self._client.get_model_metadata(self._p.model, headers=self._p.headers, as_json=True)
        return self._client.get_model_metadata(self._p.model, headers=self._p.headers)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "SVDClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSVDClient:
    """asyncio client with the same API: `await AsyncSVDClient(url).generate(image, ...)`."""

    def __init__(self, url: str | None = None, protocol: str = "http", token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, model: str = MODEL_NAME):
        self._p = _Protocol(url, protocol, token, timeout, model, asynchronous=True)
        self._client = self._p.tc.InferenceServerClient(self._p.url, **self._p.client_kwargs())

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self._p.model, headers=self._p.headers))
        except Exception:
            return False

    async def generate(self, image: Any, *, frames: bool = False, **params: Any) -> VideoResult:
        started = time.perf_counter()
        try:
            if self._p.datatypes is None:
                kwargs = {"as_json": True} if self._p.protocol == "grpc" else {}
                self._p.learn_datatypes(await self._client.get_model_metadata(self._p.model, headers=self._p.headers, **kwargs))
            inputs, outputs = self._p.build(image, params, frames)
            call = self._client.infer(self._p.model, inputs, outputs=outputs, **self._p.call_kwargs())
            response = await asyncio.wait_for(call, self._p.timeout)
        except Exception as error:
            raise _map_error(error) from None
        return self._p.result(response, started, frames)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncSVDClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
