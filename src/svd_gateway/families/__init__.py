"""The hosted APIs the gateway speaks, one folder each: its request and response models, its translation of a
request into one `spec.JobSpec`, its router (HTTP only) and its error shape. A family imports no other family;
what they share is below them (schemas: the contract's pydantic fields; service.DataPlane: images, jobs, the
one parameter check; jobs and store). Adding a family is a folder and one line in app.FAMILIES."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from svd_contract import Progress

from ..errors import Renderer, house_error
from ..store import Job


@dataclass(frozen=True)
class Family:
    name: str
    routers: tuple[APIRouter, ...]
    render_error: Renderer = house_error
    """Its error body, for what is answered before a route is chosen (its routes carry it themselves)."""
    prefixes: tuple[str, ...] = ()
    """The paths that are its own, whose errors answered before routing (401, 408, 413, 404) take its shape."""
    webhook_payloads: dict[str, Callable[[Job, float], dict[str, Any]]] = field(default_factory=dict)
    """How a job of each of its origins is rendered in its webhook deliveries (with output links good for the
    seconds given)."""
    progress_lines: dict[str, Callable[[Progress], str]] = field(default_factory=dict)
    """How the progress of a job of each of its origins reads in the job's logs (default: jobs.progress_line)."""
