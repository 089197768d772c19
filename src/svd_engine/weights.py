"""Is this a loadable SVD pipeline? One check for the model load and for `svd-triton weights validate`.

A weights tree is a diffusers pipeline folder wherever it lives (a local folder, the hub's local cache,
an S3-compatible bucket): `model_index.json` at its top or exactly one folder down, each component it
names in its own folder with a config and, for models, safetensors weights. The check reads only JSON
files and safetensors headers, so it needs no torch and, for a bucket, downloads no weights.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelLoadError

MODEL_INDEX = "model_index.json"
SERVED_PIPELINES = ("StableVideoDiffusionPipeline", "EnginePipeline")
"""model_index.json `_class_name`s this model serves (EnginePipeline: our subclass, what save_pretrained writes)."""
TEXT_IMAGE_PIPELINES = (
    "StableDiffusionXLPipeline",
    "StableDiffusionPipeline",
    "StableDiffusion3Pipeline",
    "PixArtSigmaPipeline",
    "FluxPipeline",
    "SanaPipeline",
)
"""Text-to-image pipelines the text_to_image model loads (diffusers' AutoPipelineForText2Image classes)."""
SVD_COMPONENTS = ("unet", "vae", "image_encoder", "scheduler", "feature_extractor")
CONFIG_SUFFIXES = (".json", ".txt")
"""Non-weight files a component may need (configs, tokenizer vocabularies); everything else is left behind."""
HALF_VARIANT = "fp16"
SAFETENSORS_HEAD = 256 * 1024
"""Bytes read first from a safetensors file: enough for the header of a UNet; more is read when not."""
DOWNLOAD_THREADS = 8
PROGRESS_EVERY_S = 5.0
log = logging.getLogger(__name__)


class WeightsTree:
    """Files of a pipeline folder, by path relative to the folder holding model_index.json."""

    location: str
    """How to show the folder to a user (a path or s3://bucket/prefix); never carries credentials."""
    files: dict[str, int]
    """Relative path → size in bytes, for model_index.json and the files one folder below it."""

    def read(self, path: str, length: int | None = None) -> bytes:
        """The file's bytes (the first `length` of them when given)."""
        raise NotImplementedError

    def copy(self, path: str, target: Path) -> None:
        """Write the file to `target` so that `target` appears only once complete."""
        raise NotImplementedError


class FolderTree(WeightsTree):
    def __init__(self, folder: Path):
        self.folder = folder
        self.location = str(folder)
        self.files = {}
        for entry in [folder / MODEL_INDEX, *folder.glob("*/*")]:
            if entry.is_file():
                self.files[entry.relative_to(folder).as_posix()] = entry.stat().st_size

    def read(self, path: str, length: int | None = None) -> bytes:
        with open(self.folder / path, "rb") as file:
            return file.read(-1 if length is None else length)

    def copy(self, path: str, target: Path) -> None:
        with open(self.folder / path, "rb") as source:
            write_complete(target, lambda partial: shutil.copyfileobj(source, partial))


def write_complete(target: Path, write) -> None:
    """Call write(file) on a temporary file beside `target`, then rename it: `target` never holds half a file."""
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=target.name + ".", suffix=".partial", delete=False
    ) as partial:
        write(partial)
    os.replace(partial.name, target)


def pipeline_root(where: str, entries: Iterable[str], holders: Iterable[str]) -> str:
    """'' when `where` holds model_index.json, else the one sub-folder ('name/') that does.

    `entries` are the names at the top of `where` (folders end with '/'); `holders` the sub-folders
    that hold a model_index.json. The rule is TIR's model path rule: the top or exactly one level down.
    """
    entries, holders = sorted(entries), sorted(holders)
    if MODEL_INDEX in entries:
        return ""
    if len(holders) == 1:
        return holders[0]
    if holders:
        raise ModelLoadError(f"{where} holds several pipelines ({', '.join(holders)}); point the model source at one")
    shown = ", ".join(entries[:30]) + (f", … ({len(entries)} entries)" if len(entries) > 30 else "")
    raise ModelLoadError(
        f"no model_index.json in {where} or its sub-folders; it contains: {shown or 'nothing'}. "
        "Expected a diffusers pipeline folder (model_index.json, unet/, vae/, image_encoder/, ...)"
    )


def find_model_folder(folder: Path) -> Path:
    """The folder holding model_index.json: `folder` itself or exactly one of its sub-folders."""
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist or is not a folder")
    children = list(folder.iterdir())
    entries = [child.name + ("/" if child.is_dir() else "") for child in children]
    holders = [child.name + "/" for child in children if (child / MODEL_INDEX).is_file()]
    return folder / pipeline_root(str(folder), entries, holders)


def is_weights_file(path: str) -> bool:
    return path.endswith(".safetensors")


def is_half_variant(path: str) -> bool:
    """diffusion_pytorch_model.fp16.safetensors, or a shard: diffusion_pytorch_model.fp16-00001-of-00002.safetensors."""
    return re.search(rf"\.{HALF_VARIANT}[.-]", Path(path).name) is not None


def choose_variant(files: Iterable[str], half: bool) -> str | None:
    """The diffusers `variant` to load: fp16 files in half precision, or wherever a component has only those.

    diffusers loads a component without the requested variant from its plain files, but not the
    reverse, so fp16 is the choice whenever some component has nothing else.
    """
    by_component: dict[str, set[bool]] = {}
    for path in files:
        if is_weights_file(path) and "/" in path:
            by_component.setdefault(path.split("/")[0], set()).add(is_half_variant(path))
    if not any(True in kinds for kinds in by_component.values()):
        return None
    return HALF_VARIANT if half or any(kinds == {True} for kinds in by_component.values()) else None


def component_weights(files: Iterable[str], component: str, variant: str | None) -> list[str]:
    """The safetensors files (all shards) of `component` that diffusers loads for `variant`."""
    weights = [p for p in files if p.startswith(component + "/") and is_weights_file(p)]
    half = [p for p in weights if is_half_variant(p)]
    plain = [p for p in weights if not is_half_variant(p)]
    return sorted(half if variant == HALF_VARIANT and half else plain)


def required_config(class_name: str) -> str:
    """The config file a component of this class is loaded from."""
    if class_name.endswith("Scheduler"):
        return "scheduler_config.json"
    if "ImageProcessor" in class_name or "FeatureExtractor" in class_name:
        return "preprocessor_config.json"
    if "Tokenizer" in class_name:
        return "tokenizer_config.json"
    return "config.json"


def safetensors_header(tree: WeightsTree, path: str) -> dict:
    """The tensor table of a safetensors file, read from its first bytes only.

    Parsed here rather than with the safetensors package, which opens local files only: the same
    code then reads a header from a bucket with a ranged GET instead of downloading gigabytes.
    """
    head = tree.read(path, SAFETENSORS_HEAD)
    if len(head) < 8:
        raise ValueError("shorter than a safetensors header")
    (length,) = struct.unpack("<Q", head[:8])
    if length > tree.files[path] - 8:
        raise ValueError("its header is longer than the file")
    if 8 + length > len(head):
        head = tree.read(path, 8 + length)
    header = json.loads(head[8 : 8 + length])
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    if 8 + length + end != tree.files[path]:
        raise ValueError(
            f"truncated or padded: its header describes {8 + length + end} bytes, the file has {tree.files[path]}"
        )
    return header


@dataclass
class Inspection:
    """What a weights tree holds, what a load would read, and what stops it from loading."""

    location: str
    pipeline_class: str | None = None
    variant: str | None = None
    found: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """The files a load reads (model_index.json, configs, the chosen safetensors): what gets downloaded."""
    sizes: dict[str, int] = field(default_factory=dict)
    kind: str = "SVD pipeline"

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def error(self) -> str:
        return f"{self.location} is not a loadable {self.kind}: " + "; ".join(self.problems)

    def report(self) -> str:
        """The text `svd-triton weights validate` prints."""
        lines = [
            f"{self.location}: {self.pipeline_class or 'no pipeline class'}"
            + (f", loads the {HALF_VARIANT} variant" if self.variant else "")
        ]
        lines += [f"  ok       {line}" for line in self.found]
        lines += [f"  PROBLEM  {line}" for line in self.problems]
        total = sum(self.sizes[p] for p in self.files)
        lines.append(f"loadable: a load reads {len(self.files)} files, {_size(total)}" if self.ok else self.error)
        return "\n".join(lines)


def check_weights(tree: WeightsTree, *, half: bool, served: tuple[str, ...] = SERVED_PIPELINES) -> Inspection:
    """Check `tree` as a model serving the pipeline classes `served` would load it (in half precision or not);
    SVD's component and shape rules apply to SVD pipelines."""
    result = Inspection(
        tree.location, sizes=tree.files, kind="SVD pipeline" if served == SERVED_PIPELINES else "text-to-image pipeline"
    )
    if MODEL_INDEX not in tree.files:
        result.problems.append("no model_index.json")
        return result
    try:
        index = json.loads(tree.read(MODEL_INDEX))
    except ValueError as error:
        index = error
    if not isinstance(index, dict):
        result.problems.append(f"model_index.json is not a JSON object ({index})")
        return result
    result.files.append(MODEL_INDEX)
    result.pipeline_class = index.get("_class_name")
    if result.pipeline_class not in served:
        result.problems.append(
            f"pipeline class {result.pipeline_class!r} is not one this model serves ({', '.join(served)})"
        )
    result.variant = choose_variant(tree.files, half)
    components = {
        name: value
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[1]
    }
    configs, tensors = {}, {}
    for name, (_, class_name) in sorted(components.items()):
        configs[name], tensors[name] = _check_component(tree, name, class_name, result)
    if result.pipeline_class in SERVED_PIPELINES:
        result.problems += [
            f"{name}: not named in model_index.json" for name in SVD_COMPONENTS if name not in components
        ]
        _check_svd_shapes(configs, tensors, result)
    return result


def _check_component(tree: WeightsTree, name: str, class_name: str, result: Inspection) -> tuple[dict | None, dict]:
    """(its config, its weights' tensor table), adding what was found and what is wrong to `result`."""
    config_name = required_config(class_name)
    present = sorted(p for p in tree.files if p.startswith(name + "/"))
    if not present:
        needs = f"{name}/{config_name}" + ("" if config_name != "config.json" else f" and {name}/*.safetensors")
        result.problems.append(f"{name}: folder missing ({class_name}; expected {needs})")
        return None, {}
    result.files += [p for p in present if p.endswith(CONFIG_SUFFIXES)]
    config = None
    if f"{name}/{config_name}" not in tree.files:
        result.problems.append(f"{name}: no {config_name} (it holds {', '.join(Path(p).name for p in present)})")
    else:
        try:
            config = json.loads(tree.read(f"{name}/{config_name}"))
        except ValueError as error:
            result.problems.append(f"{name}: {config_name} is not valid JSON ({error})")
    if config_name != "config.json":
        if config is not None:
            result.found.append(f"{name}: {class_name}, {config_name}")
        return config, {}
    weights = component_weights(tree.files, name, result.variant)
    if not weights:
        others = [Path(p).name for p in present if not p.endswith(CONFIG_SUFFIXES)]
        refused = " (pickle weights such as .bin are never loaded: convert them to safetensors)" if others else ""
        result.problems.append(
            f"{name}: no safetensors weights; it holds {', '.join(Path(p).name for p in present)}{refused}"
        )
        return config, {}
    tensors = {}
    for path in weights:
        try:
            tensors.update(safetensors_header(tree, path))
        except (ValueError, KeyError, TypeError, struct.error) as error:
            result.problems.append(f"{path} is not a readable safetensors file ({error})")
    result.files += weights
    size = _size(sum(tree.files[p] for p in weights))
    result.found.append(f"{name}: {class_name}, {config_name}, {', '.join(Path(p).name for p in weights)} ({size})")
    return config, tensors


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _check_svd_shapes(configs: dict[str, dict | None], tensors: dict[str, dict], result: Inspection) -> None:
    """SVD's shape rules: the UNet takes noise and image latents side by side, cross-attends to CLIP."""
    unet, vae, encoder = configs.get("unet"), configs.get("vae"), configs.get("image_encoder")
    if unet is None:
        return
    latent = (vae or {}).get("latent_channels", 4)
    in_channels, frames = unet.get("in_channels"), unet.get("num_frames")
    if in_channels != 2 * latent:
        result.problems.append(
            f"unet: in_channels is {in_channels}, SVD needs {2 * latent} (twice the VAE's {latent} latent channels)"
        )
    conv_in = tensors["unet"].get("conv_in.weight", {}).get("shape")
    if conv_in and in_channels is not None and conv_in[1] != in_channels:
        result.problems.append(
            f"unet: conv_in.weight takes {conv_in[1]} channels but config.json says in_channels {in_channels}"
        )
    if not isinstance(frames, int) or frames < 2:
        result.problems.append(f"unet: num_frames is {frames!r}, expected a frame count of at least 2 (25 for XT)")
    if encoder is not None and encoder.get("projection_dim") != unet.get("cross_attention_dim"):
        result.problems.append(
            f"image_encoder: projection_dim {encoder.get('projection_dim')} does not match "
            f"unet cross_attention_dim {unet.get('cross_attention_dim')}"
        )
    if not result.problems:
        result.found.append(
            f"shapes: unet in_channels {in_channels} = 2 × vae latent_channels {latent}, {frames} frames, "
            f"cross_attention_dim {unet.get('cross_attention_dim')}"
        )


def require_loadable(tree: WeightsTree, *, half: bool, served: tuple[str, ...] = SERVED_PIPELINES) -> Inspection:
    """check_weights(), raising ModelLoadError with the problems when the pipeline would not load."""
    result = check_weights(tree, half=half, served=served)
    if not result.ok:
        raise ModelLoadError(result.error)
    return result


def copy_files(tree: WeightsTree, files: list[str], target: Path, threads: int = DOWNLOAD_THREADS) -> None:
    """Copy `files` of `tree` into `target`, in parallel, logging progress; each file appears only once complete."""
    total = sum(tree.files[p] for p in files)
    done = {"bytes": 0, "files": 0}
    lock = threading.Lock()
    started = last = time.monotonic()

    def report(final: bool = False) -> None:
        nonlocal last
        now = time.monotonic()
        if final or now - last >= PROGRESS_EVERY_S:
            last = now
            rate = done["bytes"] / max(now - started, 1e-6) / 1e6
            log.info(
                "%s: %d of %d files, %s of %s (%.0f%%), %.0f MB/s",
                tree.location,
                done["files"],
                len(files),
                _size(done["bytes"]),
                _size(total),
                100 * done["bytes"] / max(total, 1),
                rate,
            )

    def one(path: str) -> None:
        destination = target / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        tree.copy(path, destination)
        if destination.stat().st_size != tree.files[path]:
            destination.unlink()
            raise ModelLoadError(f"{tree.location}/{path} changed size while it was copied; try again")
        with lock:
            done["bytes"] += tree.files[path]
            done["files"] += 1
            report()

    log.info("%s: copying %d files (%s) to %s", tree.location, len(files), _size(total), target)
    with ThreadPoolExecutor(threads, thread_name_prefix="svd-weights") as pool:
        list(pool.map(one, files))
    report(final=True)
