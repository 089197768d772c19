"""A thin, typed client for the svd_xt Triton model over HTTP or gRPC (sync and asyncio).

Input names are the parameter names in upper case (num_frames → NUM_FRAMES); their datatypes are
read once from the model's metadata, so the server's config.pbtxt stays the one contract. When the
deployment streams (a decoupled config), calls go over a gRPC stream and report progress.

Over gRPC, a call that is interrupted (Ctrl-C, asyncio task cancellation) or runs past the client's
timeout is cancelled on the server too, which stops its work at the next denoising step. Triton's
HTTP endpoint has no cancellation: an abandoned HTTP request runs to the end.
"""
from __future__ import annotations

import asyncio
import json
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from .errors import (DeadlineExceededError, InvalidRequestError, RequestCancelledError, ServerError, SVDClientError,
                     UnauthorizedError, UnavailableError)

MODEL_NAME = "svd_xt"
TEXT_TO_VIDEO_MODEL = "text_to_video"
"""The server-side chain text_to_image → svd_xt that `generate(prompt=...)` calls."""
DEFAULT_TIMEOUT = 900.0  # seconds: an SVD-XT request takes tens of seconds, more when queued
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
IMAGE_INPUTS = ("IMAGE", "IMAGE_BYTES")
NOT_PARAMETERS = (*IMAGE_INPUTS, "CONTROL")
MAGIC = ((b"GIF8", 0, "gif"), (b"\x93NUMPY", 0, "frames"), (b"\x1a\x45\xdf\xa3", 0, "webm"),
         (b"ftyp", 4, "mp4"), (b"AVI ", 8, "avi"), (b"WEBP", 8, "webp"))


def sniff_format(data: bytes) -> str:
    """The video_format of an encoded result, from its first bytes."""
    for magic, offset, name in MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return name
    return "unknown"


@dataclass(frozen=True)
class ProgressUpdate:
    """One progress response of a streaming deployment."""

    phase: str
    """text-to-image (prompt calls only), then preparing, denoising, decoding or encoding."""
    step: int
    total: int
    elapsed: float
    segment: int = 1
    """Which chained clip is being generated (SEGMENTS), of `segments`."""
    segments: int = 1


@dataclass
class VideoResult:
    video: bytes
    seed: int
    seconds: float
    """Wall-clock time of the call, queueing included."""
    frames: np.ndarray | None = field(default=None, repr=False)
    """F×H×W×3 uint8, only when asked for with frames=True."""
    image: np.ndarray | None = field(default=None, repr=False)
    """H×W×3 uint8: the first frame text-to-image made (prompt calls only), to look at or reuse as an image."""

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
    if isinstance(error, asyncio.TimeoutError):
        return DeadlineExceededError("no answer within the client's timeout")
    if isinstance(error, OSError) and not isinstance(error, InferenceServerException):
        return UnavailableError(f"server not reachable: {error or type(error).__name__}")
    if callable(getattr(error, "code", None)) and callable(getattr(error, "details", None)):  # grpc's own RpcError
        code = error.code().name
        if code == "UNAVAILABLE":  # the transport's details name internal addresses: not for end users
            return UnavailableError("server not reachable (gRPC UNAVAILABLE)")
        kind = {"DEADLINE_EXCEEDED": DeadlineExceededError, "CANCELLED": RequestCancelledError,
                "UNAUTHENTICATED": UnauthorizedError, "PERMISSION_DENIED": UnauthorizedError,
                "INVALID_ARGUMENT": InvalidRequestError}.get(code, ServerError)
        return kind(f"{code}: {error.details()}")
    message = error.message() if isinstance(error, InferenceServerException) else str(error)
    status = str(error.status() if isinstance(error, InferenceServerException) else "")
    message = message or str(error)
    if "restricted" in message or any(code in status for code in ("401", "403", "PERMISSION_DENIED", "UNAUTHENTICATED")):
        return UnauthorizedError(message)
    if "INVALID_ARG" in status or status == "400":
        return InvalidRequestError(message)
    if "unknown model" in message or "no available versions" in message:  # unloaded (cold) or absent
        return UnavailableError(message)
    if "CANCELLED" in status:
        return RequestCancelledError(message)
    if "DEADLINE_EXCEEDED" in status or status == "504":
        return DeadlineExceededError(message)
    if any(code in status for code in ("UNAVAILABLE", "503")):
        return UnavailableError(message)
    return ServerError(message)


def auth_headers(protocol: str, token: str | None) -> dict[str, str] | None:
    """The bearer-token header for `protocol`, None without a token. Triton's restricted gRPC protocol
    reads its key from a `triton-grpc-protocol-` prefixed header."""
    if not token:
        return None
    return {"authorization" if protocol == "http" else "triton-grpc-protocol-authorization": f"Bearer {token}"}


class _Protocol:
    """What the sync and async clients share: connection settings and request/response conversion."""

    def __init__(self, url: str | None, protocol: str, token: str | None, timeout: float, model: str, asynchronous: bool):
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.model = model
        self.timeout = timeout
        self.headers = auth_headers(protocol, token)
        self.tc = _module(protocol, asynchronous)
        self.datatypes: dict[str, str] | None = None
        self.streams = False

    def client_kwargs(self) -> dict:
        if self.protocol == "http" and self.tc.__name__.endswith("aio"):
            return {"conn_timeout": self.timeout}
        if self.protocol == "http":
            return {"connection_timeout": self.timeout, "network_timeout": self.timeout}
        return {}

    def call_kwargs(self) -> dict:
        return {"headers": self.headers, **({"client_timeout": self.timeout} if self.protocol == "grpc" else {})}

    def learn_contract(self, metadata, config) -> None:
        """Input datatypes from the model's metadata; whether it streams from its configuration."""
        inputs = metadata["inputs"] if isinstance(metadata, dict) else metadata.inputs
        self.datatypes = {i["name"] if isinstance(i, dict) else i.name: i["datatype"] if isinstance(i, dict) else i.datatype
                          for i in inputs}
        config = config.get("config", config)
        self.streams = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
        if self.streams and self.protocol != "grpc":
            raise SVDClientError("this deployment streams progress (decoupled model): call it with protocol='grpc'")

    def contract_kwargs(self) -> dict:
        return {"headers": self.headers, **({"as_json": True} if self.protocol == "grpc" else {})}

    def build(self, image: Any, params: dict[str, Any], frames: bool):
        """Inputs and requested outputs; without an image (text_to_video) IMAGE is an output: the first frame."""
        from tritonclient.utils import triton_to_np_dtype

        if image is None and frames:
            raise SVDClientError("frames=True is not available with a prompt (text_to_video returns VIDEO and IMAGE)")
        tensors = {} if image is None else dict([_image_tensor(image)])
        for name, value in params.items():
            if value is None:
                continue
            input_name = name.upper()
            if input_name not in self.datatypes or input_name in NOT_PARAMETERS:
                accepted = ", ".join(n.lower() for n in self.datatypes if n not in NOT_PARAMETERS)
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
        wanted = (["VIDEO", "SEED_USED"] + (["FRAMES"] if frames else []) + (["IMAGE"] if image is None else [])
                  + (["PROGRESS"] if self.streams else []))
        outputs = [self.tc.InferRequestedOutput(name, **({"binary_data": True} if self.protocol == "http" else {}))
                   for name in wanted]
        return inputs, outputs

    def build_control(self, action: str):
        """A keep-warm CONTROL request (prewarm, pin, release, state): no image, answered with STATE."""
        if "CONTROL" not in self.datatypes:
            raise SVDClientError(f"model {self.model!r} has no CONTROL input (a server older than keep-warm)")
        tensor = self.tc.InferInput("CONTROL", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[action.encode()]], dtype=np.object_))
        return [tensor], [self.tc.InferRequestedOutput("STATE")]

    @staticmethod
    def state(response) -> dict:
        return json.loads(response.as_numpy("STATE").reshape(-1)[0])

    @staticmethod
    def is_final(response) -> bool:
        return response.get_response().parameters["triton_final_response"].bool_param

    @staticmethod
    def progress(response) -> ProgressUpdate:
        return ProgressUpdate(**json.loads(response.as_numpy("PROGRESS").reshape(-1)[0]))

    @staticmethod
    def result(response, started: float, frames: bool) -> VideoResult:
        return VideoResult(
            video=bytes(response.as_numpy("VIDEO").reshape(-1)[0]),
            seed=int(response.as_numpy("SEED_USED").reshape(-1)[0]),
            seconds=time.perf_counter() - started,
            frames=response.as_numpy("FRAMES")[0] if frames else None,
            image=image[0] if (image := response.as_numpy("IMAGE")) is not None else None,
        )


def _text_params(image: Any, prompt: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the prompt added; exactly one of an image and a prompt."""
    if (image is None) == (prompt is None):
        raise SVDClientError("give an image (image-to-video) or a prompt (text-to-video), exactly one")
    return params if prompt is None else {"prompt": prompt, **params}


class SVDClient:
    """Blocking client: `SVDClient("localhost:8000").generate("cat.png", num_frames=14).save("cat.mp4")`.

    One call at a time per instance when the deployment streams (one gRPC stream per client).
    """

    def __init__(self, url: str | None = None, protocol: str = "http", token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, model: str = MODEL_NAME, text_model: str = TEXT_TO_VIDEO_MODEL):
        self._p = _Protocol(url, protocol, token, timeout, model, asynchronous=False)
        self._text = _Protocol(url, protocol, token, timeout, text_model, asynchronous=False)
        self._client = self._p.tc.InferenceServerClient(self._p.url, **self._p.client_kwargs())

    def ready(self) -> bool:
        """True when the server is up and the model is loaded and ready (warm)."""
        try:
            return bool(self._client.is_model_ready(self._p.model, headers=self._p.headers))
        except Exception:
            return False

    def status(self) -> dict:
        """Server liveness/readiness, whether the model is loaded and ready (warm), and whether it streams."""
        try:
            live = self._client.is_server_live(headers=self._p.headers)
            ready = self._client.is_server_ready(headers=self._p.headers)
        except Exception as error:
            raise _map_error(error) from None
        model_ready = self.ready()
        return {"server_live": bool(live), "server_ready": bool(ready), "model": self._p.model,
                "model_ready": model_ready, "streams": self.streams if model_ready else None}

    def load(self) -> None:
        """Load (warm up) the model; the server must run with --model-control-mode=explicit."""
        self._control(self._client.load_model)

    def unload(self) -> None:
        """Unload the model and free its GPU memory; it answers UNAVAILABLE until loaded again."""
        self._control(self._client.unload_model)

    def _control(self, action) -> None:
        try:
            action(self._p.model, headers=self._p.headers)
        except Exception as error:
            raise _map_error(error) from None
        self._p.datatypes = None  # the next call re-reads the contract

    def control(self, action: str) -> dict:
        """Keep-warm control: `prewarm` (weights onto the device without generating), `pin` (prewarm and
        stay warm until released), `release` (unpin, free the device now) or `state`. Returns the model's
        keep-warm state: state (warm/cold/starting), since, keep_warm_left_seconds, was_cold_start, ..."""
        try:
            self._learn_contract()
            inputs, outputs = self._p.build_control(action)
            if self._p.streams:
                response = self._stream(self._p, inputs, outputs, None)
            else:
                response = self._client.infer(self._p.model, inputs, outputs=outputs, **self._p.call_kwargs())
        except Exception as error:
            raise _map_error(error) from None
        return self._p.state(response)

    @property
    def streams(self) -> bool:
        """Whether the deployment sends progress (a decoupled model, called over a gRPC stream)."""
        try:
            self._learn_contract()
        except Exception as error:
            raise _map_error(error) from None
        return self._p.streams

    def generate(self, image: Any = None, *, prompt: str | None = None, frames: bool = False,
                 on_progress: Callable[[ProgressUpdate], Any] | None = None, **params: Any) -> VideoResult:
        """Generate a video from `image` (path, bytes, PIL image or H×W×3 uint8 array), or from `prompt`
        alone through the server's text_to_video chain (the result then carries `image`, its first frame).

        `params` are the model's optional inputs in lower case (num_frames=14, video_format="webm", ...;
        with a prompt also negative_prompt, image_num_inference_steps, image_guidance_scale);
        frames=True also returns the raw frames; `on_progress` is called for each progress update
        when the deployment streams.
        """
        started = time.perf_counter()
        try:
            params = _text_params(image, prompt, params)
            p = self._p if prompt is None else self._text
            self._learn_contract(p)
            inputs, outputs = p.build(image, params, frames)
            if p.streams:
                response = self._stream(p, inputs, outputs, on_progress)
            elif p.protocol == "grpc":
                response = self._cancellable(p, inputs, outputs)
            else:
                response = self._client.infer(p.model, inputs, outputs=outputs, **p.call_kwargs())
        except Exception as error:
            raise _map_error(error) from None
        return p.result(response, started, frames)

    def _learn_contract(self, p: _Protocol | None = None) -> None:
        p = p or self._p
        if p.datatypes is None:
            kwargs = p.contract_kwargs()
            p.learn_contract(self._client.get_model_metadata(p.model, **kwargs),
                             self._client.get_model_config(p.model, **kwargs))

    def _cancellable(self, p, inputs, outputs):
        """A unary gRPC call that the server cancels when we are interrupted or time out."""
        replies: queue.Queue = queue.Queue()
        call = self._client.async_infer(p.model, inputs, callback=lambda result, error: replies.put((result, error)),
                                        outputs=outputs, **p.call_kwargs())
        try:
            result, error = replies.get()
        except BaseException:
            call.cancel()
            raise
        if error is not None:
            raise error
        return result

    def _stream(self, p, inputs, outputs, on_progress):
        """One request on a gRPC stream: progress responses, then the final one."""
        replies: queue.Queue = queue.Queue()
        self._client.start_stream(lambda result, error: replies.put((result, error)), headers=p.headers)
        deadline = time.monotonic() + p.timeout
        try:
            self._client.async_stream_infer(p.model, inputs, outputs=outputs)
            while True:
                try:
                    result, error = replies.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise DeadlineExceededError(f"no answer within {p.timeout:g} s") from None
                if error is not None:
                    raise error
                if p.is_final(result):
                    self._client.stop_stream()
                    return result
                if on_progress is not None:
                    on_progress(p.progress(result))
        except BaseException:
            self._client.stop_stream(cancel_requests=True)
            raise

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "SVDClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSVDClient:
    """asyncio client with the same API: `await AsyncSVDClient(url).generate(image, ...)`.

    Cancelling the task (or its timeout) cancels the gRPC call on the server.
    """

    def __init__(self, url: str | None = None, protocol: str = "http", token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, model: str = MODEL_NAME, text_model: str = TEXT_TO_VIDEO_MODEL):
        self._p = _Protocol(url, protocol, token, timeout, model, asynchronous=True)
        self._text = _Protocol(url, protocol, token, timeout, text_model, asynchronous=True)
        self._client = self._p.tc.InferenceServerClient(self._p.url, **self._p.client_kwargs())

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self._p.model, headers=self._p.headers))
        except Exception:
            return False

    async def _learn_contract(self, p: _Protocol | None = None) -> None:
        p = p or self._p
        if p.datatypes is None:
            kwargs = p.contract_kwargs()
            p.learn_contract(await self._client.get_model_metadata(p.model, **kwargs),
                             await self._client.get_model_config(p.model, **kwargs))

    async def model_config(self) -> dict:
        """The model's configuration as Triton serves it (config.pbtxt as JSON: inputs, `parameters`...)."""
        try:
            config = await self._client.get_model_config(self._p.model, **self._p.contract_kwargs())
        except Exception as error:
            raise _map_error(error) from None
        return config.get("config", config)

    async def control(self, action: str) -> dict:
        """Like SVDClient.control."""
        try:
            await self._learn_contract()
            inputs, outputs = self._p.build_control(action)
            if self._p.streams:
                call = self._stream(self._p, inputs, outputs, None)
            else:
                call = self._client.infer(self._p.model, inputs, outputs=outputs, **self._p.call_kwargs())
            response = await asyncio.wait_for(call, self._p.timeout)
        except Exception as error:
            raise _map_error(error) from None
        return self._p.state(response)

    async def generate(self, image: Any = None, *, prompt: str | None = None, frames: bool = False,
                       on_progress: Callable[[ProgressUpdate], Any] | None = None, **params: Any) -> VideoResult:
        """Like SVDClient.generate."""
        started = time.perf_counter()
        try:
            params = _text_params(image, prompt, params)
            p = self._p if prompt is None else self._text
            await self._learn_contract(p)
            inputs, outputs = p.build(image, params, frames)
            if p.streams:
                call = self._stream(p, inputs, outputs, on_progress)
            else:
                call = self._client.infer(p.model, inputs, outputs=outputs, **p.call_kwargs())
            response = await asyncio.wait_for(call, p.timeout)
        except Exception as error:
            raise _map_error(error) from None
        return p.result(response, started, frames)

    async def _stream(self, p, inputs, outputs, on_progress):
        async def one_request():
            yield {"model_name": p.model, "inputs": inputs, "outputs": outputs}

        final = None
        # Read to the stream's end rather than leaving after the final response: abandoning the iterator
        # cancels the gRPC call, and a cancel racing the server's completion of the request is avoidable.
        async for result, error in self._client.stream_infer(one_request(), headers=p.headers):
            if error is not None:
                raise error
            if p.is_final(result):
                final = result
            elif on_progress is not None:
                on_progress(p.progress(result))
        if final is None:
            raise ServerError("the stream ended without a final response")
        return final

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncSVDClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
