"""E2E TIR's pre-built endpoint: POST /v1/models/{model}:predict or /predict, base64 in and out."""

from .. import Family
from .router import named, router

FAMILY = Family("tir", (named, router))
