"""Model sources: what one source string names, resolved in one place for every engine and the CLI.

A source is a built-in random-weight model (`tiny`, `random-xt`: svd_engine.testing), `s3://bucket/prefix`
(copied into a local cache first: svd_engine.weights_bucket), a local folder holding a diffusers
pipeline (or one folder down), or a Hugging Face hub id. Weights load as safetensors only, never with
remote code, after the same check `svd-triton weights validate` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from svd_contract import is_s3_url

from .errors import ModelLoadError
from .weights import FolderTree, WeightsTree, find_model_folder, require_loadable

HALF_VARIANT = "fp16"
log = logging.getLogger(__name__)


def is_folder(source: str) -> bool:
    return Path(source).expanduser().exists() or source.startswith(("/", ".", "~"))


def load_diffusers(
    pipeline_class,
    source: str,
    *,
    dtype,
    half: bool,
    served: tuple[str, ...],
    built_in: dict[str, Callable],
    device,
    hub_hint: str,
):
    """`pipeline_class.from_pretrained` from `source` in `dtype` (half: fp16 files where there are some).

    A built-in source is built on `device`; `hub_hint` finishes the error for a hub id that cannot load."""
    if source in built_in:
        return built_in[source](device)
    if is_s3_url(source):
        from .weights_bucket import fetch

        folder = fetch(source, half=half, served=served)
    elif is_folder(source):
        folder = find_model_folder(Path(source).expanduser())
    else:
        try:
            return pipeline_class.from_pretrained(
                source, dtype=dtype, variant=HALF_VARIANT if half else None, use_safetensors=True
            )
        except (OSError, ValueError) as error:
            log.debug("hub load failed", exc_info=True)
            raise ModelLoadError(
                f"could not load {source!r} from the Hugging Face hub or its local cache "
                f"({type(error).__name__}). {hub_hint}"
            ) from error
    variant = require_loadable(FolderTree(folder), half=half, served=served).variant
    try:
        return pipeline_class.from_pretrained(folder, dtype=dtype, variant=variant, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the pipeline in {folder}: {error}") from error


def open_tree(source: str, built_in=("tiny", "random-xt")) -> WeightsTree:
    """The weights tree a source names, without downloading weights: s3://…, a folder, or a hub id
    already in the local hub cache (`svd-triton weights validate/pull`)."""
    if is_s3_url(source):
        from .weights_bucket import BucketTree

        return BucketTree(source)
    if is_folder(source):
        return FolderTree(find_model_folder(Path(source).expanduser()))
    if source in built_in:
        raise ModelLoadError(f"{source!r} is built in process from random weights: it has no files to check")
    from huggingface_hub import snapshot_download

    try:
        return FolderTree(Path(snapshot_download(source, local_files_only=True)))
    except (OSError, ValueError) as error:  # LocalEntryNotFoundError, an invalid repo id
        raise ModelLoadError(
            f"{source!r} is not in the local Hugging Face cache ({type(error).__name__}); "
            f"`huggingface-cli download {source}` fetches it, or give a folder or s3://bucket/prefix"
        ) from None
