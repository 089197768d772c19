"""The `schedule` parameter: karras (the scheduler's own sigmas) or ays (Align Your Steps), passed through the
pipeline's own `sigmas=`; requests with different schedules never share a pipeline call."""
import functools

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.schedulers import AysSchedules

from svd_contract import FIXED_DEFAULTS, PARAMETERS, InvalidRequest
from svd_engine.pipeline import schedule_sigmas
from tests.support.videos import max_abs_diff

DOCUMENTED = AysSchedules["StableDiffusionVideoSigmas"]
"""diffusers' AYS sigmas for SVD at 10 steps, the final 0 included."""
SMALL = {"num_frames": 4, "decode_chunk_size": 4}


def comfyui_ays(steps: int) -> np.ndarray:
    """ComfyUI's AlignYourStepsScheduler (comfy_extras/nodes_align_your_steps.py) for SVD, written out again:
    NVIDIA's published list (ending at sigma_min 0.002), log-linearly interpolated when the count differs,
    its last set to 0."""
    def loglinear_interp(t_steps, num_steps):
        xs = np.linspace(0, 1, len(t_steps))
        ys = np.log(t_steps[::-1])
        new_xs = np.linspace(0, 1, num_steps)
        new_ys = np.interp(new_xs, xs, ys)
        return np.exp(new_ys)[::-1].copy()

    sigmas = [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]
    if steps + 1 != len(sigmas):
        sigmas = loglinear_interp(sigmas, steps + 1)
    sigmas = np.array(sigmas)
    sigmas[-1] = 0
    return sigmas


def used_sigmas(engine, image, **params) -> tuple[list[float], np.ndarray]:
    """The sigmas the scheduler ran one request with, and its frames."""
    [result] = engine.generate([engine.parse(image, seed=4, **SMALL, **params)])
    return engine.pipeline.scheduler.sigmas.tolist(), result.frames


def test_the_contract_declares_schedule_with_karras_the_default():
    assert PARAMETERS["schedule"].choices == ("karras", "ays")
    assert FIXED_DEFAULTS["schedule"] == "karras"


def test_documented_list_ends_in_zero_and_starts_at_700():
    """The convention the engine relies on: 11 sigmas for 10 steps, the 0 included (the scheduler appends none)."""
    assert len(DOCUMENTED) == 11 and DOCUMENTED[0] == 700.0 and DOCUMENTED[-1] == 0.0


def test_ays_at_10_steps_runs_the_documented_sigmas(tiny_engine, sample_png):
    sigmas, _ = used_sigmas(tiny_engine, sample_png, num_inference_steps=10, schedule="ays")
    assert sigmas == torch.tensor(DOCUMENTED, dtype=torch.float32).tolist()
    # SVD's scheduler (continuous v-prediction timesteps) conditions the UNet on 0.25·log σ of each step's σ.
    expected = 0.25 * torch.tensor(DOCUMENTED[:-1], dtype=torch.float32).log()
    assert torch.allclose(tiny_engine.pipeline.scheduler.timesteps.cpu(), expected)


@pytest.mark.parametrize("steps", [1, 2, 4, 10, 25, 50, 100])
def test_ays_at_any_count_is_the_log_linear_interpolation_comfyui_uses(steps):
    assert schedule_sigmas("ays", steps) == pytest.approx(comfyui_ays(steps).tolist(), rel=1e-12, abs=0)


def test_ays_at_25_steps_decreases_from_700_to_0_through_the_documented_points():
    sigmas = schedule_sigmas("ays", 25)
    assert sigmas is not None and len(sigmas) == 26
    assert sigmas[0] == DOCUMENTED[0] == 700.0 and sigmas[-1] == 0.0
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))
    # 25/10 steps: every second documented point falls on a step of the 25 and is kept.
    assert [sigmas[k] for k in (5, 10, 15, 20)] == pytest.approx([DOCUMENTED[j] for j in (2, 4, 6, 8)], rel=1e-12)


def test_ays_at_25_steps_is_what_the_scheduler_runs(tiny_engine, sample_png):
    sigmas, _ = used_sigmas(tiny_engine, sample_png, num_inference_steps=25, schedule="ays")
    assert sigmas == torch.tensor(schedule_sigmas("ays", 25), dtype=torch.float32).tolist()


def test_karras_is_the_default_and_the_schedulers_own(tiny_engine, sample_png):
    steps = 6
    assert tiny_engine.parse(sample_png).schedule == "karras" and schedule_sigmas("karras", steps) is None
    default_sigmas, default_frames = used_sigmas(tiny_engine, sample_png, num_inference_steps=steps)
    own = EulerDiscreteScheduler.from_config(tiny_engine.pipeline.scheduler.config)
    own.set_timesteps(steps)
    assert default_sigmas == own.sigmas.tolist() and default_sigmas[:1] == [700.0]
    ays_sigmas, ays_frames = used_sigmas(tiny_engine, sample_png, num_inference_steps=steps, schedule="ays")
    assert ays_sigmas != default_sigmas and max_abs_diff(ays_frames, default_frames) > 0
    # An ays call leaves nothing behind: karras afterwards is the default run again, to the byte.
    karras_sigmas, karras_frames = used_sigmas(tiny_engine, sample_png, num_inference_steps=steps, schedule="karras")
    assert karras_sigmas == default_sigmas and np.array_equal(karras_frames, default_frames)


def test_different_schedules_never_share_a_pipeline_call(tiny_engine, sample_png, sample_rgb):
    karras = tiny_engine.parse(sample_png, seed=1, num_inference_steps=4, **SMALL)
    ays = tiny_engine.parse(sample_png, seed=1, num_inference_steps=4, schedule="ays", **SMALL)
    other_karras = tiny_engine.parse(sample_rgb[::-1].copy(), seed=2, num_inference_steps=4, **SMALL)
    assert karras.batch_key() != ays.batch_key() and karras.batch_key() == other_karras.batch_key()
    calls, sigmas = [], []
    set_timesteps = tiny_engine.pipeline.scheduler.set_timesteps

    @functools.wraps(set_timesteps)  # keeps its signature: the pipeline checks that it takes `sigmas`
    def recording(*args, **kwargs):
        set_timesteps(*args, **kwargs)
        sigmas.append(tiny_engine.pipeline.scheduler.sigmas.tolist())

    tiny_engine.pipeline.scheduler.set_timesteps = recording
    try:
        batched = tiny_engine.generate(
            [karras, ays, other_karras],
            on_progress=lambda p: calls.append(p.batch) if p.phase == "denoising" else None,
        )
    finally:
        del tiny_engine.pipeline.scheduler.set_timesteps
    assert sorted(set(calls)) == [(0, 2), (1,)]
    own = EulerDiscreteScheduler.from_config(tiny_engine.pipeline.scheduler.config)
    own.set_timesteps(4)
    ays_sigmas = torch.tensor(schedule_sigmas("ays", 4), dtype=torch.float32).tolist()
    assert sorted(sigmas) == sorted([own.sigmas.tolist(), ays_sigmas])  # one call each, each with its own sigmas
    for request, result in zip((karras, ays, other_karras), batched):
        [alone] = tiny_engine.generate([request])
        assert max_abs_diff(alone.frames, result.frames) <= 1
    assert max_abs_diff(batched[0].frames, batched[1].frames) > 0  # same image and seed: the schedule differs


@pytest.mark.parametrize("value", ["euler", "", "karras,ays", 3, None])
def test_an_unknown_schedule_is_refused_naming_the_field_and_the_choices(tiny_engine, sample_png, value):
    if value is None:  # None means "the default" in a request: the unset field, not a refusal
        assert tiny_engine.parse(sample_png, schedule=None).schedule == "karras"
        return
    with pytest.raises(InvalidRequest) as caught:
        tiny_engine.parse(sample_png, schedule=value)
    error = caught.value
    assert (error.code, error.field) == ("INVALID_ARG", "schedule")
    assert str(error).startswith("schedule: ")
    if isinstance(value, str):
        assert str(error).endswith("is not supported; accepted: karras, ays")


@pytest.mark.parametrize("value", ["AYS", " ays ", b"ays", np.bytes_(b"Karras")])
def test_schedule_reads_as_the_other_choices_do(tiny_engine, sample_png, value):
    """Case and surrounding spaces do not matter; Triton's TYPE_STRING inputs arrive as bytes."""
    assert tiny_engine.parse(sample_png, schedule=value).schedule == str(value if isinstance(value, str) else
                                                                          bytes(value).decode()).strip().lower()
