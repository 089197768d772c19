"""Replicate's file uploads (/v1/files: how the replicate client sends local file inputs) and the generated videos
(/v1/outputs: public, the unguessable link is the credential)."""

from .. import Family
from .router import files, outputs

FAMILY = Family("files", (files, outputs))
