"""Loading an SVD pipeline from one source string: a hub id, a local folder, s3://bucket/prefix, or `tiny`."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import ModelLoadError
from .object_storage import fetch, is_s3_source
from .pipeline import EnginePipeline
from .weights import FolderTree, find_model_folder, require_loadable

TINY_SOURCE = "tiny"
RANDOM_XT_SOURCE = "random-xt"
"""SVD-XT's full-size architecture with random weights: real compute and memory, meaningless videos."""
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def load_pipeline(source: str, *, device: torch.device, dtype: torch.dtype) -> EnginePipeline:
    """Load weights (safetensors only, never remote code) and move them to `device` in `dtype`."""
    if source == TINY_SOURCE:
        pipeline = build_tiny_pipeline()
    elif source == RANDOM_XT_SOURCE:
        pipeline = build_random_xt_pipeline(device)
    elif is_s3_source(source):
        pipeline = _from_folder(fetch(source, half=_is_half(dtype)), dtype)
    elif Path(source).expanduser().exists() or source.startswith(("/", ".", "~")):
        pipeline = _from_folder(find_model_folder(Path(source).expanduser()), dtype)
    else:
        pipeline = _from_hub(source, dtype)
    pipeline.set_progress_bar_config(disable=True)
    if pipeline.dtype != dtype:
        pipeline.to(dtype=dtype)
    return pipeline.to(device)


def _is_half(dtype: torch.dtype) -> bool:
    return dtype in (torch.float16, torch.bfloat16)


def _half_variant(dtype: torch.dtype) -> str | None:
    return "fp16" if _is_half(dtype) else None


def _from_folder(folder: Path, dtype: torch.dtype) -> EnginePipeline:
    variant = require_loadable(FolderTree(folder), half=_is_half(dtype)).variant
    try:
        return EnginePipeline.from_pretrained(folder, dtype=dtype, variant=variant, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the pipeline in {folder}: {error}") from error


def _from_hub(repo_id: str, dtype: torch.dtype) -> EnginePipeline:
    try:
        return EnginePipeline.from_pretrained(repo_id, dtype=dtype, variant=_half_variant(dtype), use_safetensors=True)
    except (OSError, ValueError) as error:
        log.debug("hub load failed", exc_info=True)
        raise ModelLoadError(
            f"could not load {repo_id!r} from the Hugging Face hub or its local cache ({type(error).__name__}). "
            f"Download it where the hub is reachable with `huggingface-cli download {repo_id} --local-dir /models/svd-xt` "
            "(gated models need HF_TOKEN and accepted terms), then set the model source to that folder "
            "or mount it; or set HF_HOME to a cache that holds it."
        ) from error


def _assemble(unet, vae, image_encoder) -> EnginePipeline:
    """A pipeline around random-weight models, with SVD-XT's scheduler and CLIP preprocessing."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPImageProcessor

    scheduler = EulerDiscreteScheduler(  # SVD-XT's own scheduler configuration
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)
    return EnginePipeline(vae=vae.eval(), image_encoder=image_encoder.eval(), unet=unet.eval(), scheduler=scheduler,
                          feature_extractor=CLIPImageProcessor(crop_size=224, size=224))


def build_random_xt_pipeline(device: torch.device) -> EnginePipeline:
    """SVD-XT's architecture (UNet 1.52 B, VAE 97.7 M, CLIP ViT-H/14 632 M parameters), random weights.

    Built directly on `device` from a fixed seed, so every build on the same device has the same
    weights: benchmarks compare pipelines on it without downloading anything.
    """
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(0)
        unet = UNetSpatioTemporalConditionModel()  # its defaults are SVD-XT's UNet
        vae = AutoencoderKLTemporalDecoder(block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                                           down_block_types=["DownEncoderBlock2D"] * 4)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
            projection_dim=1024, image_size=224, patch_size=14, hidden_act="gelu"))
    return _assemble(unet, vae, image_encoder)


def build_tiny_pipeline() -> EnginePipeline:
    """A random-weight SVD with the real architecture's shape rules, built offline from a fixed seed.

    Four VAE blocks keep the real scale factor of 8; the CLIP tower keeps image_size 224 because the
    pipeline always resizes inputs to 224 for CLIP. Its videos are noise-like by design.
    """
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNetSpatioTemporalConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=8, out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=32, num_attention_heads=8, projection_class_embeddings_input_dim=96,
            addition_time_embed_dim=32,
        )
        vae = AutoencoderKLTemporalDecoder(block_out_channels=[32] * 4, in_channels=3, out_channels=3,
                                           down_block_types=["DownEncoderBlock2D"] * 4, latent_channels=4)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=5, num_attention_heads=4,
            image_size=224, intermediate_size=37, patch_size=14))
    return _assemble(unet, vae, image_encoder)
