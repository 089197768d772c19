"""Speed presets (`preset`: quality, balanced, fast): what each sets where the request leaves a field unset; a
field given explicitly wins; the result is checked against every limit like any request, and runs as its fields
say (fast: ays, 10 steps, the last 4 conditional-only: 6 guided UNet passes on 2 samples, 4 on 1)."""
from dataclasses import replace

import pytest

from svd_contract import PRESETS, InvalidRequest
from tests.unit.test_conditional_final_steps import SMALL, unet_batches


def test_a_preset_fills_what_the_request_leaves_unset(tiny_engine, sample_png):
    fast = tiny_engine.parse(sample_png, preset="fast", **SMALL)
    assert (fast.schedule, fast.num_inference_steps, fast.conditional_final_steps) == ("ays", 10, 4)
    balanced = tiny_engine.parse(sample_png, preset="balanced", **SMALL)
    assert (balanced.schedule, balanced.num_inference_steps, balanced.conditional_final_steps) == ("ays", 15, 3)
    plain, quality = (tiny_engine.parse(sample_png, seed=1, **SMALL, **preset) for preset in ({}, {"preset": "quality"}))
    assert PRESETS["quality"] == {} and replace(plain, prep_seconds=0) == replace(quality, prep_seconds=0)


def test_a_field_given_explicitly_wins_over_the_preset(tiny_engine, sample_png):
    mine = tiny_engine.parse(sample_png, preset="fast", schedule="karras", num_inference_steps=20, **SMALL)
    assert (mine.schedule, mine.num_inference_steps, mine.conditional_final_steps) == ("karras", 20, 4)
    few = tiny_engine.parse(sample_png, preset="fast", num_inference_steps=3, **SMALL)
    assert few.conditional_final_steps == 3  # the preset's window capped at the steps asked for
    with pytest.raises(InvalidRequest) as refused:  # an explicit window over the steps is the client's: refused
        tiny_engine.parse(sample_png, preset="fast", num_inference_steps=3, conditional_final_steps=5, **SMALL)
    assert refused.value.field == "conditional_final_steps"


def test_an_unknown_preset_is_refused_naming_the_field_and_the_choices(tiny_engine, sample_png):
    with pytest.raises(InvalidRequest) as refused:
        tiny_engine.parse(sample_png, preset="turbo", **SMALL)
    assert refused.value.field == "preset" and "quality, balanced, fast" in str(refused.value)


def test_fast_runs_ten_steps_the_last_four_on_the_conditional_half(tiny_engine, sample_png):
    request = tiny_engine.parse(sample_png, preset="fast", seed=3, **SMALL)
    _, passes = unet_batches(tiny_engine, lambda: tiny_engine.generate([request]))
    assert passes == [2] * 6 + [1] * 4
    assert request.unet_steps == 6 + 4 * 0.5  # what max_work charges, against 25 whole steps for quality
