"""The skeleton every generating model of the repository shares (svd_xt, text_to_image).

initialize: the stub's set-up, config.pbtxt checked against the contract (failing the load with the
model's name), the engine loaded from config.pbtxt's parameters, metrics and keep-warm. execute: each
request's tensors parsed into a validated engine request (or answered with its error at once), the
accepted ones run as one engine batch, and every final reply sent from this thread once the batch is
done (svd_triton_backend.compat says why). A model's model.py subclasses one of these and sets its names.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import triton_python_backend_utils as pb_utils

from svd_contract import InvalidRequest, tensors
from svd_engine.keep_warm import KeepWarm

from . import stub_process
from .errors import answer_error
from .metrics import Metrics
from .model_config import add_parameter_inputs, check_declared, deployment_config, keep_warm_seconds, warmup_requests
from .replies import Replies, done

if TYPE_CHECKING:  # an annotation only: the config auto-completion process imports this module and needs no torch
    from svd_engine.base import ResidentEngine


class TritonModel(Protocol):
    """What open_model reads and sets of a model: GenerationModel's, chain.ChainModel's."""

    MODEL: ClassVar[str | None]
    model_name: str
    decoupled: bool


def open_model(model: TritonModel, args: Mapping[str, str]) -> dict[str, Any]:
    """initialize()'s common start: names the model, prepares the stub process, checks config.pbtxt against
    the contract (failing the load with the model's name) and notes whether it is decoupled; the config."""
    model.model_name = args["model_name"]
    stub_process.prepare()
    model_config = json.loads(args["model_config"])
    assert model.MODEL is not None, f"{type(model).__name__} names its MODEL"
    check_declared(model_config, model.model_name, tensors.inputs(model.MODEL), tensors.OUTPUTS[model.MODEL])
    model.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
    return model_config


def scalar_inputs(request: pb_utils.InferenceRequest, names: Iterable[str]) -> dict[str, Any]:
    """{input name: its one value} for each of `names` the request carries (InvalidRequest for several)."""
    values = {}
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            array = tensor.as_numpy()
            if array.size != 1:
                raise InvalidRequest(name, f"send one value, got {array.size}")
            values[name] = array.reshape(-1)[0]
    return values


class GenerationModel:
    """A Triton model around one engine. Subclasses set the names and implement `parse`, `run`, `outputs`."""

    MODEL: ClassVar[str | None] = None
    """The contract's model name (svd_contract.tensors): its inputs and outputs."""
    ENGINE: ClassVar[str | None] = None
    """`module:Class` of the engine, imported in initialize (the config auto-completion process needs no torch)."""
    ENVIRONMENT: ClassVar[tuple[str, str] | tuple[None, None]] = (None, None)
    """The variables that override config.pbtxt's model_source and keep_warm_seconds."""
    model_name: str
    decoupled: bool
    logger: Any
    """pb_utils.Logger."""
    engine: ResidentEngine
    metrics: Metrics
    keep_warm: KeepWarm

    @classmethod
    def auto_complete_config(cls, auto_complete_model_config: pb_utils.ModelConfig) -> pb_utils.ModelConfig:
        assert cls.MODEL is not None, f"{cls.__name__} names its MODEL"
        return add_parameter_inputs(auto_complete_model_config, cls.MODEL)

    def initialize(self, args: Mapping[str, str]) -> None:
        model_config = open_model(self, args)
        assert self.ENGINE is not None and self.ENVIRONMENT[0] is not None, (
            f"{type(self).__name__} sets ENGINE, ENVIRONMENT"
        )
        module, _, name = self.ENGINE.partition(":")
        engine_class = getattr(importlib.import_module(module), name)
        model_source, keep_warm = (os.environ.get(variable) for variable in self.ENVIRONMENT)
        config = deployment_config(
            engine_class.config_class,
            model_config,
            args["model_instance_kind"],
            args["model_instance_device_id"],
            model_source,
        )
        self.logger = pb_utils.Logger
        self.logger.log_info(
            f"{self.model_name}: loading {config.model_source} on {config.device} ({config.dtype})"
            + (", streaming progress" if self.decoupled else "")
        )
        self.engine = engine_class.load(config)
        if description := self.engine.describe():
            self.logger.log_info(f"{self.model_name}: {description}")
        self.metrics = Metrics(self.model_name, warmup_requests(model_config))
        seconds = keep_warm_seconds(model_config, keep_warm)
        self.keep_warm = KeepWarm(self.engine, seconds, on_change=self.metrics.keep_warm)
        self.logger.log_info(
            f"{self.model_name}: keep-warm {seconds} s, then release by {self.engine.release_mechanism}"
        )

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> list[pb_utils.InferenceResponse | None] | None:
        replies = Replies(requests, self.decoupled)
        accepted: list[tuple[int, Any]] = []  # (position, validated request)
        for position, request in enumerate(requests):
            try:
                spec = self.accept(replies, position, request)
                if spec is not None:
                    accepted.append((position, spec))
            except Exception as error:
                self.fail(replies, position, error)
        if not accepted:
            return replies.finish()
        self.metrics.running.set(len(accepted))
        try:
            with self.keep_warm.serving():
                futures = self.run(replies, accepted)
        except Exception as error:
            futures = [done(error) for _ in accepted]
        concurrent.futures.wait(futures)
        self.metrics.running.set(0)
        done = [
            result
            for (position, spec), future in zip(accepted, futures)
            if (result := self.deliver(replies, position, spec, future)) is not None
        ]
        self.executed(len(requests), done)
        return replies.finish()

    def accept(self, replies: Replies, position: int, request: pb_utils.InferenceRequest) -> Any:
        """The validated engine request; None when this request was answered already (svd_xt's CONTROL)."""
        try:
            return self.parse(request)
        except InvalidRequest as error:
            raise InvalidRequest(self.input_name(request, error.field), error.detail) from None

    def input_name(self, request: pb_utils.InferenceRequest, field: str) -> str:
        """The input a refused engine field came in as."""
        return tensors.tensor_name(field)

    def parse(self, request: pb_utils.InferenceRequest) -> Any:
        """The engine's validated request (GenerationRequest, TextImageRequest) of one Triton request."""
        raise NotImplementedError

    def run(self, replies: Replies, accepted: list[tuple[int, Any]]) -> list[concurrent.futures.Future[Any]]:
        """One Future per accepted (position, spec), in order, resolving to the engine's result."""
        raise NotImplementedError

    def outputs(self, result: Any, wanted: set[str]) -> list[pb_utils.Tensor]:
        """The output tensors of one result that the client asked for."""
        raise NotImplementedError

    def observe(self, spec: Any, result: Any) -> None:
        self.metrics.succeeded(result.timings)

    def executed(self, count: int, results: list[Any]) -> None:
        """Called once per execute with the results delivered."""

    def deliver(self, replies: Replies, position: int, spec: Any, future: concurrent.futures.Future[Any]) -> Any:
        """Send one request's final reply: its outputs, or the error it ended with. Never raises: a
        failure while sending one reply must not cost the other requests of the batch theirs.

        Returns the result when its outputs were sent, else None."""
        try:
            result = future.result()
            replies.send(position, self.outputs(result, replies.wanted[position]))
            self.observe(spec, result)
        except Exception as error:
            self.fail(replies, position, error)  # after a sent reply, logs the error and sends nothing more
            return None
        return result

    def fail(self, replies: Replies, position: int, error: BaseException) -> None:
        answer_error(self.model_name, replies, position, error, self.metrics.count)

    def finalize(self) -> None:
        self.keep_warm.close()
        self.engine.close()
