"""The `conditional_final_steps` parameter: the last k denoising steps run the UNet on the conditional half of
the guided batch alone (batch B, not 2B) and use its prediction as the step's noise prediction, exactly what
guidance gives when the unconditional prediction is replaced by the conditional one. 0 (the default) guides
every step; requests with different windows never share a pipeline call."""
import contextlib
import math

import numpy as np
import pytest
import torch

from svd_contract import FIXED_DEFAULTS, PARAMETERS, InvalidRequest
from svd_engine import EngineConfig, GenerationCancelled
from svd_engine import engine as engine_module
from svd_engine.feature_cache import CachedUNet
from svd_engine.guidance import ConditionalFinalSteps
from svd_engine.request import CONDITIONAL_STEP_COST, SHALLOW_STEP_COST, parse_request
from tests.support.videos import max_abs_diff

FRAMES = 4
SMALL = {"num_frames": FRAMES, "decode_chunk_size": FRAMES}


def parse(engine, image, **params):
    return engine.parse(image, **SMALL, **params)


def unet_batches(engine, run) -> tuple[list[int], list[int]]:
    """The batch of each call of the UNet module during `run()`, and of each UNet pass counted at its input
    convolution (the cached path runs the UNet block by block: no module call, one conv_in per pass)."""
    unet = engine.feature_cache.unet
    calls: list[int] = []
    passes: list[int] = []
    hooks = [unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0])),
             unet.conv_in.register_forward_pre_hook(lambda module, args: passes.append(args[0].shape[0] // FRAMES))]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return calls, passes


class ConditionalReplacesUnconditional:
    """The reference: the guided UNet call on the whole 2B batch, its unconditional half replaced by its
    conditional half on the last `steps` steps (what the window promises, computed the expensive way)."""

    def __init__(self, pipeline, unet, steps: int):
        self.pipeline, self.unet, self.steps, self.step = pipeline, unet, steps, 0

    def __getattr__(self, name):
        return getattr(self.unet, name)

    def __call__(self, *args, **kwargs):
        step, self.step = self.step, self.step + 1
        (noise,) = self.unet(*args, **kwargs)
        if step < self.pipeline.num_timesteps - self.steps:
            return (noise,)
        _, cond = noise.chunk(2)
        return (torch.cat([cond, cond]),)


@contextlib.contextmanager
def replacing_unconditional(pipeline, steps: int):
    original = pipeline.unet
    vars(pipeline)["unet"] = ConditionalReplacesUnconditional(pipeline, original, steps)
    try:
        yield
    finally:
        vars(pipeline)["unet"] = original


def reference_frames(engine, request, monkeypatch) -> np.ndarray:
    """`request` run with the reference standing where the engine puts the window's stand-in (inside the
    feature caching, around the cached UNet where there is one)."""
    with monkeypatch.context() as patch:
        patch.setattr(engine_module, "conditional_final_steps", replacing_unconditional)
        [result] = engine.generate([request])
    return result.frames


def test_the_contract_declares_it_an_integer_0_to_100_default_0():
    parameter = PARAMETERS["conditional_final_steps"]
    assert (parameter.kind, parameter.low, parameter.high) == (int, 0, 100)
    assert FIXED_DEFAULTS["conditional_final_steps"] == 0
    assert "unconditional" in parameter.help and "0 guides every step" in parameter.help


@pytest.mark.parametrize("value,accepted", [(-1, "0–100"), (101, "0–100"), (4, "0–3")])
def test_out_of_range_is_refused_naming_the_field(tiny_engine, sample_png, value, accepted):
    """Static range 0–100, and never more steps than the request has (3 by this engine's default)."""
    with pytest.raises(InvalidRequest) as caught:
        tiny_engine.parse(sample_png, conditional_final_steps=value)
    error = caught.value
    assert (error.code, error.field) == ("INVALID_ARG", "conditional_final_steps")
    assert str(error) == (f"conditional_final_steps: conditional_final_steps={value} is out of range; "
                          f"accepted: an integer in {accepted}")


@pytest.mark.parametrize("value", [1.5, "two", True])
def test_a_non_integer_is_refused_naming_the_field(tiny_engine, sample_png, value):
    with pytest.raises(InvalidRequest) as caught:
        tiny_engine.parse(sample_png, conditional_final_steps=value)
    assert caught.value.field == "conditional_final_steps"


def test_within_range_is_accepted(tiny_engine, sample_png):
    assert tiny_engine.parse(sample_png).conditional_final_steps == 0
    assert tiny_engine.parse(sample_png, conditional_final_steps=None).conditional_final_steps == 0
    assert tiny_engine.parse(sample_png, conditional_final_steps=np.int32(3)).conditional_final_steps == 3
    assert tiny_engine.parse(sample_png, num_inference_steps=100, conditional_final_steps=100).conditional_steps == 100


def test_5_steps_window_2_runs_3_guided_then_2_conditional_unet_calls(tiny_engine, sample_png):
    request = parse(tiny_engine, sample_png, seed=1, num_inference_steps=5, conditional_final_steps=2)
    events = []
    calls, passes = unet_batches(tiny_engine, lambda: tiny_engine.generate([request], on_progress=events.append))
    assert calls == passes == [2, 2, 2, 1, 1]
    assert [e.step for e in events if e.phase == "denoising" and e.step > 0] == [1, 2, 3, 4, 5]  # every step reported
    assert tiny_engine.pipeline.unet is tiny_engine.feature_cache.unet  # the stand-in is gone after the call


def test_a_batch_of_b_videos_runs_2b_then_b(tiny_engine, sample_png, sample_rgb):
    requests = [parse(tiny_engine, image, seed=seed, num_inference_steps=5, conditional_final_steps=2)
                for image, seed in ((sample_png, 1), (sample_rgb[::-1].copy(), 2), (sample_png, 3))]
    calls, _ = unet_batches(tiny_engine, lambda: tiny_engine.generate(requests))
    assert calls == [6, 6, 6, 3, 3]


def test_window_0_is_the_guided_run_to_the_bit_and_installs_nothing(tiny_engine, sample_png):
    seen = []
    default = parse(tiny_engine, sample_png, seed=5, num_inference_steps=4)
    [plain] = tiny_engine.generate([default], on_progress=lambda _: seen.append(tiny_engine.pipeline.unet))
    assert {id(unet) for unet in seen} == {id(tiny_engine.feature_cache.unet)}
    explicit = parse(tiny_engine, sample_png, seed=5, num_inference_steps=4, conditional_final_steps=0)
    calls, _ = unet_batches(tiny_engine, lambda: tiny_engine.generate([explicit]))
    [zero] = tiny_engine.generate([explicit])
    assert calls == [2, 2, 2, 2] and np.array_equal(plain.frames, zero.frames)
    assert default.batch_key() == explicit.batch_key() and default.work == explicit.work


def test_the_window_is_guidance_with_the_unconditional_prediction_replaced(tiny_engine, sample_png, monkeypatch):
    guided = parse(tiny_engine, sample_png, seed=6, num_inference_steps=5)
    windowed = parse(tiny_engine, sample_png, seed=6, num_inference_steps=5, conditional_final_steps=2)
    [result] = tiny_engine.generate([windowed])
    assert max_abs_diff(result.frames, reference_frames(tiny_engine, windowed, monkeypatch)) <= 1
    [plain] = tiny_engine.generate([guided])
    assert max_abs_diff(result.frames, plain.frames) > 1  # the window changed the video
    assert result.frames.std() > 1


def test_a_window_over_every_step_is_the_unguided_run(tiny_engine, sample_png, monkeypatch):
    """Every step conditional only is guidance scale 1 throughout: the pipeline's own unguided run (batch B,
    the conditional inputs), to the bit."""
    everything = parse(tiny_engine, sample_png, seed=7, num_inference_steps=4, conditional_final_steps=4)
    unguided = parse(tiny_engine, sample_png, seed=7, num_inference_steps=4, min_guidance_scale=1.0,
                     max_guidance_scale=1.0)
    calls, _ = unet_batches(tiny_engine, lambda: tiny_engine.generate([everything]))
    assert calls == [1, 1, 1, 1]
    [windowed], [plain] = tiny_engine.generate([everything]), tiny_engine.generate([unguided])
    assert np.array_equal(windowed.frames, plain.frames)
    assert max_abs_diff(windowed.frames, reference_frames(tiny_engine, everything, monkeypatch)) <= 1


def test_without_guidance_the_window_changes_nothing(tiny_engine, sample_png):
    unguided = dict(seed=8, num_inference_steps=4, min_guidance_scale=0.5, max_guidance_scale=1.0)
    none, windowed = (parse(tiny_engine, sample_png, **unguided, conditional_final_steps=k) for k in (0, 3))
    calls, _ = unet_batches(tiny_engine, lambda: tiny_engine.generate([windowed]))
    assert calls == [1, 1, 1, 1]
    assert windowed.conditional_steps == 0 and windowed.batch_key() == none.batch_key()
    assert windowed.work == none.work
    assert np.array_equal(tiny_engine.generate([windowed])[0].frames, tiny_engine.generate([none])[0].frames)


@pytest.mark.parametrize("window", [2, 3, 5])
def test_feature_caching_keeps_each_samples_feature_when_the_batch_halves(tiny_engine, sample_png, monkeypatch,
                                                                         window):
    """Interval 2 over 5 steps: whole on 0, 2, 4. Window 2 halves the batch on shallow step 3 (it finds the
    conditional rows of the feature step 2 kept at batch 2); window 3 on whole step 2."""
    request = parse(tiny_engine, sample_png, seed=9, num_inference_steps=5, cache_interval=2,
                    conditional_final_steps=window)
    mid = []
    hook = tiny_engine.feature_cache.unet.mid_block.register_forward_pre_hook(lambda *_: mid.append(1))
    try:
        calls, passes = unet_batches(tiny_engine, lambda: tiny_engine.generate([request]))
    finally:
        hook.remove()
    assert calls == [] and passes == [2] * (5 - window) + [1] * window
    assert len(mid) == 3  # whole steps 0, 2, 4 whatever the window
    [result] = tiny_engine.generate([request])
    assert max_abs_diff(result.frames, reference_frames(tiny_engine, request, monkeypatch)) <= 1
    assert tiny_engine.pipeline.unet is tiny_engine.feature_cache.unet


def test_the_cached_feature_keeps_the_conditional_rows():
    cached = CachedUNet.__new__(CachedUNet)
    feature = torch.arange(2 * 3 * 4).reshape(2 * 3, 4).float()  # 2 samples (uncond, cond) × 3 frames
    cached._feature, cached._feature_samples = feature, 2
    cached.keep_last_samples(1)
    assert torch.equal(cached._feature, feature[3:]) and cached._feature_samples == 1
    cached.keep_last_samples(1)  # already narrowed: nothing changes
    assert torch.equal(cached._feature, feature[3:])


def test_requests_with_different_windows_never_share_a_pipeline_call(tiny_engine, sample_png, sample_rgb):
    steps = dict(num_inference_steps=5)
    requests = [parse(tiny_engine, sample_png, seed=11, **steps),
                parse(tiny_engine, sample_png, seed=11, **steps, conditional_final_steps=2),
                parse(tiny_engine, sample_rgb[::-1].copy(), seed=12, **steps, conditional_final_steps=2),
                parse(tiny_engine, sample_png, seed=11, **steps, conditional_final_steps=3)]
    keys = [request.batch_key() for request in requests]
    assert len({keys[0], keys[1], keys[3]}) == 3 and keys[1] == keys[2]
    groups = []
    batched: list = []
    calls, _ = unet_batches(tiny_engine, lambda: batched.extend(tiny_engine.generate(
        requests, on_progress=lambda e: groups.append(e.batch) if e.phase == "denoising" else None)))
    assert sorted(set(groups)) == [(0,), (1, 2), (3,)]
    assert calls == [2] * 5 + [4, 4, 4, 2, 2] + [2, 2, 1, 1, 1]  # one pipeline call per window, in order
    for request, result in zip(requests, batched):
        [alone] = tiny_engine.generate([request])
        assert max_abs_diff(alone.frames, result.frames) <= 1
    assert min(max_abs_diff(batched[i].frames, batched[j].frames) for i, j in ((0, 1), (1, 3), (0, 3))) > 0


def test_each_segment_has_its_own_window(tiny_engine, sample_png):
    request = parse(tiny_engine, sample_png, seed=13, num_inference_steps=4, segments=2, conditional_final_steps=1)
    events = []
    calls, _ = unet_batches(tiny_engine, lambda: tiny_engine.generate([request], on_progress=events.append))
    assert calls == [2, 2, 2, 1] * 2
    denoising = [(e.segment, e.step) for e in events if e.phase == "denoising" and e.step > 0]
    assert denoising == [(segment, step) for segment in (1, 2) for step in range(1, 5)]


def test_cancelling_inside_the_window_stops_and_restores_the_unet(tiny_engine, sample_png):
    request = parse(tiny_engine, sample_png, seed=14, num_inference_steps=6, conditional_final_steps=4)
    steps = []
    results = tiny_engine.generate([request], on_progress=lambda p: steps.append(p.step),
                                   cancelled=lambda index: bool(steps) and steps[-1] >= 3)
    assert isinstance(results[0], GenerationCancelled) and "after step 4 of 6" in str(results[0])
    assert tiny_engine.pipeline.unet is tiny_engine.feature_cache.unet
    calls, _ = unet_batches(tiny_engine, lambda: tiny_engine.generate([request]))
    assert calls == [2, 2, 1, 1, 1, 1]  # the next call counts its steps from 0 again


def test_the_stand_in_passes_through_what_the_pipeline_reads(tiny_engine):
    pipeline = tiny_engine.pipeline
    stand_in = ConditionalFinalSteps(pipeline, pipeline.unet, 2)
    assert stand_in.config is pipeline.unet.config and stand_in.dtype == pipeline.unet.dtype


def test_work_charges_conditional_steps_at_half_a_guided_one(sample_png):
    config = EngineConfig(default_width=64, default_height=64)
    base = dict(width=64, height=64, num_frames=8, num_inference_steps=10)

    def request(**params):
        return parse_request(sample_png, {**base, **params}, config, model_num_frames=25)

    assert CONDITIONAL_STEP_COST == 0.5
    assert request(conditional_final_steps=4).unet_steps == 6 + 4 * 0.5
    assert request(conditional_final_steps=10).work == 64 * 64 * 8 * 5
    # interval 3, branch 1: whole 0, 3, 6, 9; the window 6–9 has whole 6 and 9, cached 7 and 8.
    cached = request(cache_interval=3, cache_branch_id=1, conditional_final_steps=4, segments=2)
    share = SHALLOW_STEP_COST[1]
    assert cached.unet_steps == pytest.approx(4 + 6 * share - 0.5 * (2 + 2 * share))
    assert cached.work == math.ceil(64 * 64 * 8 * cached.unet_steps * 2)
    unguided = request(max_guidance_scale=1.0, conditional_final_steps=4)  # no unconditional pass to drop
    assert unguided.unet_steps == 10 and unguided.conditional_steps == 0


def test_the_budget_message_names_the_conditional_steps(sample_png):
    config = EngineConfig(default_width=64, default_height=64, max_work=64 * 64 * 8 * 7)
    params = dict(width=64, height=64, num_frames=8, num_inference_steps=10)
    assert parse_request(sample_png, {**params, "conditional_final_steps": 6}, config, model_num_frames=25).work \
        == 64 * 64 * 8 * 7
    with pytest.raises(InvalidRequest) as caught:
        parse_request(sample_png, {**params, "conditional_final_steps": 5}, config, model_num_frames=25)
    assert "64×64×8×7.5 (the last 5 conditional only, at 0.5)×1" in str(caught.value)
