"""A thin, typed client for the svd_xt Triton model over HTTP or gRPC (sync and asyncio).

The wire protocol is svd_contract's, which the models write with: input names (tensor_name: num_frames →
NUM_FRAMES), the outputs (VIDEO_FORMAT names the video's format), progress messages (Progress) and the
deployment's defaults and limits (Deployment, from the model's configuration). Input datatypes are
read once from the model's metadata. When the deployment streams (a decoupled config), calls go over
a gRPC stream and report progress.

Over gRPC, a call that is interrupted (Ctrl-C, asyncio task cancellation) or runs past the client's
timeout is cancelled on the server too, which stops its work at the next denoising step. Triton's
HTTP endpoint has no cancellation: an abandoned HTTP request runs to the end.

Both clients run one core, `_Core`: its flows yield each tritonclient call they need and are sent the
result; `SVDClient` makes the calls, `AsyncSVDClient` awaits them.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from svd_contract import Deployment, Progress
from svd_contract.deployment import config_parameters
from svd_contract.tensors import (
    CONTROL_INPUT,
    IMAGE_INPUTS,
    SVD_MODEL,
    TEXT_TO_VIDEO_MODEL,
    parameter_name,
    tensor_name,
)
from svd_contract.tensors import (
    OUTPUTS as MODELS,
)
from svd_contract.tensors import (
    inputs as contract_inputs,
)

from .errors import (
    DeadlineExceededError,
    InvalidRequestError,
    ServerError,
    SVDClientError,
    UnauthorizedError,
    is_transient,
    map_error,
)

MODEL_NAME = SVD_MODEL
"""The model `generate(image)` calls; `generate(prompt=...)` calls the server-side chain TEXT_TO_VIDEO_MODEL."""
DEFAULT_TIMEOUT = 900.0  # seconds: an SVD-XT request takes tens of seconds, more when queued
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
NOT_PARAMETERS = (*IMAGE_INPUTS, CONTROL_INPUT)
RESULT_OUTPUTS = ("VIDEO", "VIDEO_FORMAT", "SEED_USED")
"""What every generation asks for; FRAMES, IMAGE and PROGRESS as the call needs them."""
ProgressUpdate = Progress
"""One progress response of a streaming deployment (phase, step, total, elapsed, segment, segments)."""


@dataclass
class VideoResult:
    video: bytes
    seed: int
    seconds: float
    """Wall-clock time of the call, queueing included."""
    video_format: str
    """The format of `video` (mp4, webm, ...: svd_contract.VIDEO_FORMATS), as the model names it."""
    frames: np.ndarray | None = field(default=None, repr=False)
    """F×H×W×3 uint8, only when asked for with frames=True."""
    image: np.ndarray | None = field(default=None, repr=False)
    """H×W×3 uint8: the first frame text-to-image made (prompt calls only), to look at or reuse as an image."""

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.video)
        return path


def _module(protocol: str, asynchronous: bool):
    if protocol not in DEFAULT_URLS:
        raise ValueError(f"protocol={protocol!r}; accepted: http, grpc")
    return importlib.import_module(f"tritonclient.{protocol}{'.aio' if asynchronous else ''}")


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


def _text_params(image: Any, prompt: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the prompt added; exactly one of an image and a prompt."""
    if (image is None) == (prompt is None):
        raise SVDClientError("give an image (image-to-video) or a prompt (text-to-video), exactly one")
    return params if prompt is None else {"prompt": prompt, **params}


def auth_headers(protocol: str, token: str | None) -> dict[str, str] | None:
    """The bearer-token header for `protocol`, None without a token. Triton's restricted gRPC protocol
    reads its key from a `triton-grpc-protocol-` prefixed header."""
    if not token:
        return None
    return {"authorization" if protocol == "http" else "triton-grpc-protocol-authorization": f"Bearer {token}"}


class _Model:
    """One model's contract as its server declares it: input datatypes (None until read) and whether it streams."""

    def __init__(self, name: str):
        self.name, self.streams = name, False
        self.datatypes: dict[str, str] | None = None

    def learn(self, metadata: dict[str, Any], config: dict[str, Any], protocol: str) -> None:
        config = config.get("config", config)
        streams = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
        if streams and protocol != "grpc":
            raise SVDClientError("this deployment streams progress (decoupled model): call it with protocol='grpc'")
        self.datatypes, self.streams = {i["name"]: i["datatype"] for i in metadata["inputs"]}, streams

    def inputs(self) -> set[str]:
        """The input names an INVALID_ARG message of this model may start with."""
        return {*(contract_inputs(self.name) if self.name in MODELS else ()), *(self.datatypes or ()), *NOT_PARAMETERS}


class _Infer(NamedTuple):
    """An inference a flow needs: unary, or over a gRPC stream (with progress) when the model streams."""

    model: _Model
    inputs: list[Any]
    outputs: list[Any]
    on_progress: Callable[[ProgressUpdate], Any] | None = None


RETRY_BACKOFF = (0.5, 8.0)
"""Seconds before a retried generation (first, most); doubled per retry."""
RECONNECT_BACKOFF_MS = (250, 1000)
"""gRPC's reconnect backoff (first, most): a server back from a restart is reached within about a second, not
after gRPC's default backoff of up to 2 minutes."""


def grpc_channel_args() -> list[tuple[str, int]]:
    """tritonclient's own channel options (message sizes, keepalive), with the reconnect backoff above."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    first, most = RECONNECT_BACKOFF_MS
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", first),
        ("grpc.min_reconnect_backoff_ms", first),
        ("grpc.max_reconnect_backoff_ms", most),
    ]


class _Core:
    """All that the sync and async clients share. Each public method is a flow here: a generator that yields
    the calls it needs (an _Infer, or a function of the tritonclient client) and is sent their results."""

    def __init__(
        self,
        url: str | None,
        protocol: str,
        token: str | None,
        timeout: float,
        model: str,
        text_model: str,
        asynchronous: bool,
        admin_token: str | None = None,
    ):
        self.tc = _module(protocol, asynchronous)
        self.protocol, self.url, self.timeout = protocol, url or DEFAULT_URLS[protocol], timeout
        self.headers = auth_headers(protocol, token)
        self.admin_headers = auth_headers(protocol, admin_token)
        """Triton's administrative APIs (load, unload) take the operator's admin key, never the client key."""
        self.svd, self.text = _Model(model), _Model(text_model)

    def client_kwargs(self) -> dict:
        if self.protocol == "http" and self.tc.__name__.endswith("aio"):
            return {"conn_timeout": self.timeout}
        if self.protocol == "http":
            return {"connection_timeout": self.timeout, "network_timeout": self.timeout}
        return {"channel_args": grpc_channel_args()}

    def call_kwargs(self) -> dict:
        return {"headers": self.headers, **({"client_timeout": self.timeout} if self.protocol == "grpc" else {})}

    def contract_kwargs(self) -> dict:
        return {"headers": self.headers, **({"as_json": True} if self.protocol == "grpc" else {})}

    def map_error(self, error: Exception) -> SVDClientError:
        return map_error(error, self.svd.inputs() | self.text.inputs())

    def ready(self):
        return bool((yield lambda client: client.is_model_ready(self.svd.name, headers=self.headers)))

    def server_state(self):
        live = yield lambda client: client.is_server_live(headers=self.headers)
        return bool(live), bool((yield lambda client: client.is_server_ready(headers=self.headers)))

    def manage(self, method: str):
        """load_model or unload_model, with the admin key."""
        if self.admin_headers is None:
            raise UnauthorizedError(
                f"{method.split('_')[0]} needs the operator's admin key (admin_token=, "
                "--admin-token or $SVD_TRITON_ADMIN_TOKEN); the client key cannot administer Triton"
            )
        yield lambda client: getattr(client, method)(self.svd.name, headers=self.admin_headers)
        self.svd.datatypes = None  # the next call re-reads the contract

    def streams(self):
        yield from self.learn(self.svd)
        return self.svd.streams

    def model_config(self):
        config = yield lambda client: client.get_model_config(self.svd.name, **self.contract_kwargs())
        return config.get("config", config)

    def deployment(self):
        config = yield from self.model_config()
        return Deployment.from_parameters(config_parameters(config))

    def control(self, action: str):
        yield from self.learn(self.svd)
        response = yield _Infer(self.svd, *self.build_control(action))
        return json.loads(response.as_numpy("STATE").reshape(-1)[0])

    def generate(self, image: Any, prompt: str | None, frames: bool, on_progress, params: dict[str, Any]):
        started = time.perf_counter()
        params = _text_params(image, prompt, params)
        model = self.svd if prompt is None else self.text
        yield from self.learn(model)
        response = yield _Infer(model, *self.build(model, image, params, frames), on_progress)
        return self.result(response, started, frames)

    def learn(self, model: _Model):
        """Read the model's contract, once."""
        if model.datatypes is None:
            metadata = yield lambda client: client.get_model_metadata(model.name, **self.contract_kwargs())
            config = yield lambda client: client.get_model_config(model.name, **self.contract_kwargs())
            model.learn(metadata, config, self.protocol)

    def build(self, model: _Model, image: Any, params: dict[str, Any], frames: bool) -> tuple[list[Any], list[Any]]:
        """Inputs and requested outputs; without an image (text_to_video) IMAGE is an output: the first frame."""
        from tritonclient.utils import triton_to_np_dtype

        if image is None and frames:
            raise SVDClientError("frames=True is not available with a prompt (text_to_video returns VIDEO and IMAGE)")
        datatypes = model.datatypes
        assert datatypes is not None, "read by learn() before the request is built"
        tensors = {} if image is None else dict([_image_tensor(image)])
        for name, value in params.items():
            if value is None:
                continue
            input_name = tensor_name(name)
            if input_name not in datatypes or input_name in NOT_PARAMETERS:
                accepted = ", ".join(parameter_name(n) for n in datatypes if n not in NOT_PARAMETERS)
                raise InvalidRequestError(f"unknown parameter {name!r}; accepted: {accepted}", field=name)
            dtype = triton_to_np_dtype(datatypes[input_name])
            if dtype == np.object_:
                value = str(value).encode()
            try:
                tensors[input_name] = np.array([[value]], dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                raise InvalidRequestError(
                    f"{name}={value!r} is not a valid {datatypes[input_name]}", field=name
                ) from None
        inputs = []
        for input_name, array in tensors.items():
            tensor = self.tc.InferInput(input_name, list(array.shape), datatypes.get(input_name, "BYTES"))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        wanted = (
            list(RESULT_OUTPUTS)
            + (["FRAMES"] if frames else [])
            + (["IMAGE"] if image is None else [])
            + (["PROGRESS"] if model.streams else [])
        )
        outputs = [
            self.tc.InferRequestedOutput(name, **({"binary_data": True} if self.protocol == "http" else {}))
            for name in wanted
        ]
        return inputs, outputs

    def build_control(self, action: str) -> tuple[list[Any], list[Any]]:
        """A keep-warm CONTROL request (prewarm, pin, release, state): no image, answered with STATE."""
        assert self.svd.datatypes is not None, "read by learn() before the request is built"
        if CONTROL_INPUT not in self.svd.datatypes:
            raise SVDClientError(f"model {self.svd.name!r} has no CONTROL input (a server older than keep-warm)")
        tensor = self.tc.InferInput(CONTROL_INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[action.encode()]], dtype=np.object_))
        return [tensor], [self.tc.InferRequestedOutput("STATE")]

    @staticmethod
    def stream_reply(op: _Infer, result, error):
        """A stream's final response; None after passing a progress response to the call's on_progress."""
        if error is not None:
            raise error
        if result.get_response().parameters["triton_final_response"].bool_param:
            return result
        if op.on_progress is not None:
            op.on_progress(Progress.decode(result.as_numpy("PROGRESS").reshape(-1)[0]))
        return None

    @staticmethod
    def result(response, started: float, frames: bool) -> VideoResult:
        return VideoResult(
            video=bytes(response.as_numpy("VIDEO").reshape(-1)[0]),
            seed=int(response.as_numpy("SEED_USED").reshape(-1)[0]),
            seconds=time.perf_counter() - started,
            video_format=bytes(response.as_numpy("VIDEO_FORMAT").reshape(-1)[0]).decode(),
            frames=response.as_numpy("FRAMES")[0] if frames else None,
            image=image[0] if (image := response.as_numpy("IMAGE")) is not None else None,
        )


class _Client:
    """What each client holds: its core and its tritonclient client (sync or asyncio)."""

    asynchronous = False

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "http",
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        model: str = MODEL_NAME,
        text_model: str = TEXT_TO_VIDEO_MODEL,
        admin_token: str | None = None,
        retries: int = 0,
    ):
        self._core = _Core(url, protocol, token, timeout, model, text_model, self.asynchronous, admin_token)
        self._client = self._core.tc.InferenceServerClient(self._core.url, **self._core.client_kwargs())
        self.retries = retries
        """Generations lost to a fault of the server or the transport (svd_triton.errors.is_transient: unreachable,
        restarting, the model's process died) are sent again this many times, with backoff. 0 (the default), as
        tritonclient: the caller decides. A retried request without a seed may make another video."""

    def _retry_delay(self, error: Exception, attempt: int) -> float | None:
        """Seconds before sending an inference again after `error` on `attempt` (1-based); None: raise it."""
        mapped = self._core.map_error(error)
        if attempt > self.retries or not is_transient(mapped):
            return None
        return min(RETRY_BACKOFF[1], RETRY_BACKOFF[0] * 2 ** (attempt - 1))


class SVDClient(_Client):
    """Blocking client: `SVDClient("localhost:8000").generate("cat.png", num_frames=14).save("cat.mp4")`.

    One call at a time per instance when the deployment streams (one gRPC stream per client).
    """

    def ready(self) -> bool:
        """True when the server is up and the model is loaded and ready (warm)."""
        try:
            return self._run(self._core.ready())
        except SVDClientError:
            return False

    def status(self) -> dict:
        """Server liveness/readiness, whether the model is loaded and ready (warm), and whether it streams."""
        live, ready = self._run(self._core.server_state())
        model_ready = self.ready()
        return {
            "server_live": live,
            "server_ready": ready,
            "model": self._core.svd.name,
            "model_ready": model_ready,
            "streams": self.streams if model_ready else None,
        }

    def deployment(self) -> Deployment:
        """The model's request defaults and limits (default_width, max_pixels, max_segments, ...), read from
        its configuration's `parameters`; each one config.pbtxt leaves out has the engine's default."""
        return self._run(self._core.deployment())

    def load(self) -> None:
        """Load (warm up) the model; the server must run with --model-control-mode=explicit."""
        self._run(self._core.manage("load_model"))

    def unload(self) -> None:
        """Unload the model and free its GPU memory; it answers UNAVAILABLE until loaded again."""
        self._run(self._core.manage("unload_model"))

    def control(self, action: str) -> dict:
        """Keep-warm control: `prewarm` (weights onto the device without generating), `pin` (prewarm and
        stay warm until released), `release` (unpin, free the device now) or `state`. Returns the model's
        keep-warm state: state (warm/cold/starting), since, keep_warm_left_seconds, was_cold_start, ..."""
        return self._run(self._core.control(action))

    @property
    def streams(self) -> bool:
        """Whether the deployment sends progress (a decoupled model, called over a gRPC stream)."""
        return self._run(self._core.streams())

    def generate(
        self,
        image: Any = None,
        *,
        prompt: str | None = None,
        frames: bool = False,
        on_progress: Callable[[ProgressUpdate], Any] | None = None,
        **params: Any,
    ) -> VideoResult:
        """Generate a video from `image` (path, bytes, PIL image or H×W×3 uint8 array), or from `prompt`
        alone through the server's text_to_video chain (the result then carries `image`, its first frame).

        `params` are the model's optional inputs in lower case (num_frames=14, video_format="webm", ...;
        with a prompt also negative_prompt, image_num_inference_steps, image_guidance_scale);
        frames=True also returns the raw frames; `on_progress` is called for each progress update
        when the deployment streams.
        """
        return self._run(self._core.generate(image, prompt, frames, on_progress, params))

    def _run(self, flow):
        """Run a flow of the core: make each call it yields, send it the result, map what is raised."""
        reply = None
        try:
            while True:
                reply = self._perform(flow.send(reply))
        except StopIteration as done:
            return done.value
        except Exception as error:
            raise self._core.map_error(error) from None

    def _perform(self, op):
        if not isinstance(op, _Infer):
            return op(self._client)
        for attempt in itertools.count(1):
            try:
                return self._infer(op)
            except Exception as error:
                delay = self._retry_delay(error, attempt)
                if delay is None:
                    raise
                time.sleep(delay)

    def _infer(self, op: _Infer):
        if op.model.streams:
            return self._stream(op)
        if self._core.protocol == "grpc":
            return self._cancellable(op)
        return self._client.infer(op.model.name, op.inputs, outputs=op.outputs, **self._core.call_kwargs())

    def _cancellable(self, op: _Infer):
        """A unary gRPC call that the server cancels when we are interrupted or time out."""
        replies: queue.Queue = queue.Queue()
        call = self._client.async_infer(
            op.model.name,
            op.inputs,
            outputs=op.outputs,
            **self._core.call_kwargs(),
            callback=lambda result, error: replies.put((result, error)),
        )
        try:
            result, error = replies.get()
        except BaseException:
            call.cancel()
            raise
        if error is not None:
            raise error
        return result

    def _stream(self, op: _Infer):
        """One request on a gRPC stream: progress responses, then the final one."""
        replies: queue.Queue = queue.Queue()
        self._client.start_stream(lambda result, error: replies.put((result, error)), headers=self._core.headers)
        deadline = time.monotonic() + self._core.timeout
        try:
            self._client.async_stream_infer(op.model.name, op.inputs, outputs=op.outputs)
            while True:
                try:
                    result, error = replies.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise DeadlineExceededError(f"no answer within {self._core.timeout:g} s") from None
                if (final := self._core.stream_reply(op, result, error)) is not None:
                    self._client.stop_stream()
                    return final
        except BaseException:
            self._client.stop_stream(cancel_requests=True)
            raise

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SVDClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSVDClient(_Client):
    """asyncio client with the same API: `await AsyncSVDClient(url).generate(image, ...)`.

    Cancelling the task (or its timeout) cancels the gRPC call on the server.
    """

    asynchronous = True

    async def ready(self) -> bool:
        try:
            return await self._run(self._core.ready())
        except SVDClientError:
            return False

    async def model_config(self) -> dict:
        """The model's configuration as Triton serves it (config.pbtxt as JSON: inputs, `parameters`...)."""
        return await self._run(self._core.model_config())

    async def deployment(self) -> Deployment:
        """Like SVDClient.deployment."""
        return await self._run(self._core.deployment())

    async def control(self, action: str) -> dict:
        """Like SVDClient.control."""
        return await self._run(self._core.control(action))

    async def generate(
        self,
        image: Any = None,
        *,
        prompt: str | None = None,
        frames: bool = False,
        on_progress: Callable[[ProgressUpdate], Any] | None = None,
        **params: Any,
    ) -> VideoResult:
        """Like SVDClient.generate."""
        return await self._run(self._core.generate(image, prompt, frames, on_progress, params))

    async def _run(self, flow):
        reply = None
        try:
            while True:
                reply = await self._perform(flow.send(reply))
        except StopIteration as done:
            return done.value
        except Exception as error:
            raise self._core.map_error(error) from None

    async def _perform(self, op):
        if not isinstance(op, _Infer):
            return await op(self._client)
        for attempt in itertools.count(1):
            try:
                return await self._infer(op)
            except Exception as error:
                delay = self._retry_delay(error, attempt)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _infer(self, op: _Infer):
        if op.model.streams:
            call = self._stream(op)
        else:
            call = self._client.infer(op.model.name, op.inputs, outputs=op.outputs, **self._core.call_kwargs())
        return await asyncio.wait_for(call, self._core.timeout)

    async def _stream(self, op: _Infer):
        async def one_request():
            yield {"model_name": op.model.name, "inputs": op.inputs, "outputs": op.outputs}

        final = None
        # Read to the stream's end rather than leaving after the final response: abandoning the iterator
        # cancels the gRPC call, and a cancel racing the server's completion of the request is avoidable.
        async for result, error in self._client.stream_infer(one_request(), headers=self._core.headers):
            if (reply := self._core.stream_reply(op, result, error)) is not None:
                final = reply
        if final is None:
            raise ServerError("the stream ended without a final response")
        return final

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncSVDClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
