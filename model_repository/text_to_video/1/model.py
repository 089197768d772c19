"""text_to_video: a prompt in, a video out, by chaining text_to_image and svd_xt with BLS.

text_to_image makes the first frame from PROMPT (and NEGATIVE_PROMPT, IMAGE_NUM_INFERENCE_STEPS,
IMAGE_GUIDANCE_SCALE, WIDTH, HEIGHT), then svd_xt animates it with every other input passed through
unchanged. One SEED reproduces the whole video: both stages get the same seed (picked at random when
absent and returned in SEED_USED). IMAGE returns the generated first frame. With a decoupled
configuration (stream, cpu_stream) the stream gets `text-to-image` PROGRESS responses, then svd_xt's
own, then the final one. A request whose client has gone is cancelled in the stage it is in and the
next stage is never started. Errors of either stage keep their status and name this model's input.
"""
import json
import secrets
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_contract import PROMPTS, TEXT_TO_VIDEO_IMAGE_PARAMETERS
from svd_contract.tensors import SVD_MODEL, TEXT_TO_IMAGE_MODEL, TEXT_TO_VIDEO_MODEL, inputs, parameter_inputs
from svd_triton_backend.chain import ChainModel

IMAGE_ONLY = {name.upper(): name.removeprefix("image_").upper() for name in TEXT_TO_VIDEO_IMAGE_PARAMETERS}
"""This model's inputs for text_to_image alone → their name there."""
FIRST_FRAME = (*(name.upper() for name in PROMPTS), "WIDTH", "HEIGHT")
"""Inputs text_to_image gets as they are, so the first frame has the video's size (SEED is set apart)."""


class TritonPythonModel(ChainModel):
    MODEL = TEXT_TO_VIDEO_MODEL

    def chain(self, replies, position):
        request, started = replies.requests[position], time.monotonic()
        given = {name: tensor.as_numpy() for name in inputs(self.MODEL)
                 if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None}
        seed = np.array([[int(given["SEED"].reshape(-1)[0]) if "SEED" in given else secrets.randbits(63)]], np.int64)

        def progress(step):
            replies.send_progress([position], json.dumps({"phase": "text-to-image", "step": step, "total": 1,
                                                          "elapsed": round(time.monotonic() - started, 3),
                                                          "segment": 1, "segments": 1}).encode())

        first_frame = {**{name: given[name] for name in FIRST_FRAME if name in given},
                       **{target: given[name] for name, target in IMAGE_ONLY.items() if name in given}, "SEED": seed}
        progress(0)
        images = []
        self.call(replies, position, TEXT_TO_IMAGE_MODEL, first_frame, ["IMAGE"], renamed=IMAGE_ONLY,
                  on_response=lambda response: images.append(pb_utils.get_output_tensor_by_name(response, "IMAGE")))
        image = images[0].as_numpy()
        progress(1)

        video = {**{name: given[name] for name in parameter_inputs(SVD_MODEL) if name in given}, "SEED": seed, "IMAGE": image}
        final = []

        def forward(response):
            if (tensor := pb_utils.get_output_tensor_by_name(response, "VIDEO")) is not None:
                final.append(tensor.as_numpy())
            elif (tensor := pb_utils.get_output_tensor_by_name(response, "PROGRESS")) is not None:
                replies.send_progress([position], tensor.as_numpy().reshape(-1)[0])

        self.call(replies, position, SVD_MODEL, video, ["VIDEO", "SEED_USED"] + (["PROGRESS"] if self.decoupled else []),
                  on_response=forward)
        if not final:
            raise RuntimeError(f"{SVD_MODEL} answered without a VIDEO")
        return [pb_utils.Tensor(name, array) for name, array in (("VIDEO", final[0]), ("SEED_USED", seed), ("IMAGE", image))
                if name in replies.wanted[position]]
