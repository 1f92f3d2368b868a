"""Turning trained generators into TF-Hub modules and TF Serving models."""

from export.hub_module import export_generator
from export.hub_module import next_version

__all__ = ["export_generator", "next_version"]
