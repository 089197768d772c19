"""text_to_image: a prompt in, an RGB image out (svd_engine.text_to_image.TextImageEngine).

The first stage of text_to_video, also usable alone. Inputs are PROMPT, NEGATIVE_PROMPT and the
contract's TEXT_IMAGE_PARAMETERS (named by svd_contract.tensors.tensor_name: WIDTH, HEIGHT,
NUM_INFERENCE_STEPS, GUIDANCE_SCALE, SEED; declared by auto_complete_config); outputs IMAGE (uint8,
height × width × 3) and SEED_USED.
Requests with the same size, steps and guidance share one pipeline call (dynamic batching). An idle
model gives its device memory back after `keep_warm_seconds` ($TEXT_IMAGE_KEEP_WARM_SECONDS
overrides), the first thing to free on a shared GPU.
"""
import numpy as np
import triton_python_backend_utils as pb_utils

from svd_contract import PROMPTS
from svd_contract.tensors import TEXT_TO_IMAGE_MODEL, parameter_inputs, parameter_name, tensor_name
from svd_triton_backend.replies import done
from svd_triton_backend.skeleton import GenerationModel, scalar_inputs


class TritonPythonModel(GenerationModel):
    MODEL = TEXT_TO_IMAGE_MODEL
    ENGINE = "svd_engine.text_to_image:TextImageEngine"
    ENVIRONMENT = ("TEXT_IMAGE_MODEL_SOURCE", "TEXT_IMAGE_KEEP_WARM_SECONDS")

    def parse(self, request):
        names = [*map(tensor_name, PROMPTS), *parameter_inputs(TEXT_TO_IMAGE_MODEL)]
        values = {parameter_name(name): value for name, value in scalar_inputs(request, names).items()}
        return self.engine.parse(values.pop("prompt", None), **values)

    def run(self, replies, accepted):
        results = self.engine.generate([spec for _, spec in accepted],
                                       cancelled=lambda index: replies.is_cancelled(accepted[index][0]))
        return [done(result) for result in results]

    def outputs(self, result, wanted):
        values = {"IMAGE": lambda: result.image[np.newaxis],
                  "SEED_USED": lambda: np.array([[result.seed]], dtype=np.int64)}
        return [pb_utils.Tensor(name, value()) for name, value in values.items() if name in wanted]
