"""The playground (GET /): one static page that drives the predictions API from a browser, and the
parameters endpoint its controls are built from.

The page and its two assets are public (the token is typed into the page and kept in the browser's
session storage); every API call it makes carries the token. A strict Content-Security-Policy allows
only same-origin scripts, styles and connections: no inline script, nothing from elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from svd_contract import PARAMETERS, VIDEO_FORMATS
from svd_contract.deployment import Deployment, config_parameters, read_parameters
from svd_contract.tensors import tensor_name
from svd_triton.errors import SVDClientError

from ..deps import SVDDep
from ..errors import GatewayError

router = APIRouter()
PAGE_DIR = Path(__file__).resolve().parents[1] / "playground"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample.png"
ASSETS = {
    "playground.js": (PAGE_DIR / "playground.js", "text/javascript"),
    "playground.css": (PAGE_DIR / "playground.css", "text/css"),
    "sample.png": (SAMPLE, "image/png"),
}
"""What the page loads from /playground/: its script, its style, and the sample image it offers."""
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page():
    return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/playground/{name}", include_in_schema=False)
async def asset(name: str):
    if name not in ASSETS:
        raise GatewayError(404, "not_found", "no such playground file")
    path, media_type = ASSETS[name]
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)


def deployment_parameters(config: dict) -> list[dict[str, Any]]:
    """The contract's parameters with what this deployment's configuration adds: its defaults (`default_<name>`)
    and bounds (`max_<name>`) where the contract leaves them to the deployment, and each input's Triton datatype."""
    configured = read_parameters(Deployment, config_parameters(config))  # the engine's reader, what it was given
    datatypes = {
        i["name"]: i["data_type"].removeprefix("TYPE_").replace("STRING", "BYTES") for i in config.get("input", [])
    }
    described = []
    for parameter in PARAMETERS.values():
        kind = parameter.kind
        entry = {
            **asdict(parameter),
            "kind": kind.__name__,
            "choices": list(parameter.choices),
            "datatype": datatypes.get(tensor_name(parameter.name)),
        }
        if entry["default"] is None and f"default_{parameter.name}" in configured:
            entry["default"] = configured[f"default_{parameter.name}"] or None  # 0 frames: the model's own
        if entry["high"] is None and f"max_{parameter.name}" in configured:
            entry["high"] = configured[f"max_{parameter.name}"]
        for bound in ("low", "high"):  # JavaScript numbers lose digits beyond 2^53 (the seed's range): sent as text
            if isinstance(entry[bound], int) and abs(entry[bound]) > 2**53:
                entry[bound] = str(entry[bound])
        described.append(entry)
    return described


@router.get("/v1/parameters", tags=["parameters"])
async def parameters(svd: SVDDep):
    """Every generation parameter: kind, range, choices, default, help text and Triton datatype, from the model's
    contract and this deployment's configuration (Triton unreachable: the contract alone, `deployment` false)."""
    try:
        config, reachable = await svd.model_config(), True
    except SVDClientError:
        config, reachable = {}, False
    return {
        "parameters": deployment_parameters(config),
        "deployment": reachable,
        "video_formats": {
            name: {
                "extension": f.extension,
                "mime_type": f.mime_type,
                "quality_range": list(f.quality_range) if f.quality_range else None,
            }
            for name, f in VIDEO_FORMATS.items()
        },
    }
