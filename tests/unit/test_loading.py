"""Loading from the tiny builder, a saved folder (and its parent), and the hub (offline here)."""
import numpy as np
import pytest

from svd_engine import ModelLoadError, SVDEngine
from svd_engine.testing import build_tiny_pipeline
from svd_engine.weights import find_model_folder
from tests.support.videos import max_abs_diff


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights") / "svd-tiny"
    build_tiny_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


def _frames(engine, image):
    [result] = engine.generate([engine.parse(image, seed=4, width=64, height=64, num_frames=4, num_inference_steps=2)])
    return result.frames


def test_tiny_is_built_deterministically(sample_png):
    first = SVDEngine.load(model_source="tiny", device="cpu")
    second = SVDEngine.load(model_source="tiny", device="cpu")
    assert np.array_equal(_frames(first, sample_png), _frames(second, sample_png))
    assert first.model_num_frames == 25  # like SVD-XT


def test_saved_folder_and_its_parent_load_the_same_weights(saved_tiny, sample_png):
    assert (saved_tiny / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    reference = _frames(SVDEngine.load(model_source="tiny", device="cpu"), sample_png)
    for source in (saved_tiny, saved_tiny.parent):
        engine = SVDEngine.load(model_source=str(source), device="cpu")
        assert max_abs_diff(_frames(engine, sample_png), reference) <= 1  # float reduction order only


def test_folder_without_model_index_lists_its_contents(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError) as caught:
        find_model_folder(tmp_path)
    assert "model_index.json" in str(caught.value)
    assert "notes.txt" in str(caught.value) and "unet/" in str(caught.value)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        SVDEngine.load(model_source=str(tmp_path / "nowhere"), device="cpu")


def test_unknown_hub_id_offline_says_how_to_get_weights():
    with pytest.raises(ModelLoadError) as caught:
        SVDEngine.load(model_source="nobody/no-such-svd-model", device="cpu")
    message = str(caught.value)
    assert "huggingface-cli download nobody/no-such-svd-model" in message
    assert "Traceback" not in message


def test_weights_load_only_from_safetensors(tmp_path, sample_png):
    folder = tmp_path / "pickled"
    build_tiny_pipeline().save_pretrained(folder, safe_serialization=False)  # .bin (pickle) weights only
    assert list((folder / "unet").glob("*.bin")) and not list((folder / "unet").glob("*.safetensors"))
    with pytest.raises(ModelLoadError):
        SVDEngine.load(model_source=str(folder), device="cpu")


def test_the_installed_diffusers_has_what_the_pipeline_overrides():
    from svd_engine.pipeline import diffusers_mismatches

    assert diffusers_mismatches() == []


def test_a_changed_private_method_is_named_and_fails_the_load(monkeypatch):
    from diffusers import StableVideoDiffusionPipeline

    monkeypatch.setattr(StableVideoDiffusionPipeline, "_get_add_time_ids", lambda self, fps, motion_bucket_id: None)
    monkeypatch.delattr(StableVideoDiffusionPipeline, "_encode_vae_image")
    with pytest.raises(ModelLoadError) as caught:
        SVDEngine.load(model_source="tiny", device="cpu")
    message = str(caught.value)
    assert "_get_add_time_ids('fps', 'motion_bucket_id') no longer takes" in message
    assert "_encode_vae_image no longer exists" in message
