"""Synthetic data: drive the Blender scene builder (blender_scenes/) from Python and cache what it renders."""

from polydefect.synth.runner import RenderError, ensure_rendered
from polydefect.synth.spec import SynthConfigError, cache_root, render_spec

__all__ = ["RenderError", "SynthConfigError", "cache_root", "ensure_rendered", "render_spec"]
