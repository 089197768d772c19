"""text_to_video: a prompt in, a video out, by chaining text_to_image and svd_xt with BLS.

text_to_image makes the first frame from PROMPT (and NEGATIVE_PROMPT, IMAGE_NUM_INFERENCE_STEPS,
IMAGE_GUIDANCE_SCALE, WIDTH, HEIGHT), then svd_xt animates it with every other input passed through
unchanged. One SEED reproduces the whole video: both stages get the same seed (picked at random when
absent and returned in SEED_USED). IMAGE returns the generated first frame, VIDEO_FORMAT svd_xt's
name for the video's format. With a decoupled configuration (stream, cpu_stream) the stream gets
`text-to-image` PROGRESS responses, then svd_xt's own, then the final one. A request whose client has
gone is cancelled in the stage it is in and the next stage is never started. Errors of either stage
keep their status and name this model's input.
"""
import secrets
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_contract import PROMPTS, TEXT_TO_VIDEO_IMAGE_PARAMETERS, Progress
from svd_contract.tensors import (SVD_MODEL, TEXT_TO_IMAGE_MODEL, TEXT_TO_VIDEO_MODEL, inputs, parameter_inputs,
                                  tensor_name)
from svd_triton_backend.chain import ChainModel

IMAGE_ONLY = {tensor_name(name): tensor_name(name.removeprefix("image_")) for name in TEXT_TO_VIDEO_IMAGE_PARAMETERS}
"""This model's inputs for text_to_image alone → their name there."""
FIRST_FRAME = tuple(map(tensor_name, (*PROMPTS, "width", "height")))
"""Inputs text_to_image gets as they are, so the first frame has the video's size (SEED is set apart)."""


class TritonPythonModel(ChainModel):
    MODEL = TEXT_TO_VIDEO_MODEL

    def chain(self, replies, position):
        request, started = replies.requests[position], time.monotonic()
        given = {name: tensor.as_numpy() for name in inputs(self.MODEL)
                 if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None}
        seed = np.array([[int(given["SEED"].reshape(-1)[0]) if "SEED" in given else secrets.randbits(63)]], np.int64)

        def progress(step):
            replies.progress([position], Progress("text-to-image", step, 1, time.monotonic() - started))

        first_frame = {**{name: given[name] for name in FIRST_FRAME if name in given},
                       **{target: given[name] for name, target in IMAGE_ONLY.items() if name in given}, "SEED": seed}
        progress(0)
        images = []
        self.call(replies, position, TEXT_TO_IMAGE_MODEL, first_frame, ["IMAGE"], renamed=IMAGE_ONLY,
                  on_response=lambda response: images.append(pb_utils.get_output_tensor_by_name(response, "IMAGE")))
        image = images[0].as_numpy()
        progress(1)

        video = {**{name: given[name] for name in parameter_inputs(SVD_MODEL) if name in given}, "SEED": seed, "IMAGE": image}
        final = {}

        def forward(response):
            """svd_xt's progress goes on to our client as it is; its final response holds the video."""
            outputs = {name: tensor.as_numpy() for name in ("VIDEO", "VIDEO_FORMAT", "PROGRESS")
                       if (tensor := pb_utils.get_output_tensor_by_name(response, name)) is not None}
            if "PROGRESS" in outputs:
                replies.send_progress([position], outputs.pop("PROGRESS").reshape(-1)[0])
            final.update(outputs)

        self.call(replies, position, SVD_MODEL, video,
                  ["VIDEO", "VIDEO_FORMAT", "SEED_USED"] + (["PROGRESS"] if self.decoupled else []), on_response=forward)
        if "VIDEO" not in final:
            raise RuntimeError(f"{SVD_MODEL} answered without a VIDEO")
        outputs = {**final, "SEED_USED": seed, "IMAGE": image}
        return [pb_utils.Tensor(name, array) for name, array in outputs.items() if name in replies.wanted[position]]
