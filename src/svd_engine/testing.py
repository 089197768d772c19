"""Built-in random-weight pipelines, built in process from a fixed seed: the demo's and the tests' models.

`tiny` is a small SVD with the real architecture's shape rules (seconds per video on a CPU);
`random-xt` is SVD-XT's full architecture with random weights (real compute and memory, meaningless
videos) for benchmarks; `tiny` for text_to_image is a random Stable Diffusion with a byte-level
tokenizer. None needs a file or a download. Their images and videos are noise-like by design.
"""

from __future__ import annotations

import torch

from .pipeline import EnginePipeline

TINY_SOURCE = "tiny"
RANDOM_XT_SOURCE = "random-xt"


def _assemble(unet, vae, image_encoder) -> EnginePipeline:
    """A pipeline around random-weight models, with SVD-XT's scheduler and CLIP preprocessing."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPImageProcessor

    scheduler = EulerDiscreteScheduler(  # SVD-XT's own scheduler configuration
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    return EnginePipeline(
        vae=vae.eval(),
        image_encoder=image_encoder.eval(),
        unet=unet.eval(),
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )


def build_random_xt_pipeline(device: torch.device | str = "cpu") -> EnginePipeline:
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
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=[128, 256, 512, 512], layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4
        )
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=1280,
                intermediate_size=5120,
                num_hidden_layers=32,
                num_attention_heads=16,
                projection_dim=1024,
                image_size=224,
                patch_size=14,
                hidden_act="gelu",
            )
        )
    return _assemble(unet, vae, image_encoder)


def build_tiny_pipeline(device: torch.device | str = "cpu") -> EnginePipeline:
    """A random-weight SVD with the real architecture's shape rules, built offline from a fixed seed.

    Four VAE blocks keep the real scale factor of 8; the CLIP tower keeps image_size 224 because the
    pipeline always resizes inputs to 224 for CLIP. Its videos are noise-like by design.
    """
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNetSpatioTemporalConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=32,
            num_attention_heads=8,
            projection_class_embeddings_input_dim=96,
            addition_time_embed_dim=32,
        )
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=[32] * 4,
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            latent_channels=4,
        )
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                projection_dim=32,
                num_hidden_layers=5,
                num_attention_heads=4,
                image_size=224,
                intermediate_size=37,
                patch_size=14,
            )
        )
    return _assemble(unet, vae, image_encoder).to(device)


def build_tiny_text_image_pipeline(device: torch.device | str = "cpu"):
    """A random-weight Stable Diffusion pipeline built offline from a fixed seed, tokenizer included.

    The tokenizer's vocabulary is the 256 byte-level symbols (with and without the end-of-word mark)
    and no merges, so it needs no files. Four VAE blocks keep the real scale factor of 8. Its images
    are noise-like by design.
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=32,
                bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"],
            )
        )
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            block_out_channels=[32] * 4,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            norm_num_groups=32,
        )
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(steps_offset=1, timestep_spacing="trailing"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(device)


SVD_BUILT_IN = {TINY_SOURCE: build_tiny_pipeline, RANDOM_XT_SOURCE: build_random_xt_pipeline}
"""SVD model sources built in process; each builder takes the device to build on."""
TEXT_IMAGE_BUILT_IN = {TINY_SOURCE: build_tiny_text_image_pipeline}
