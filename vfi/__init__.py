"""Diffusion-based video frame interpolation."""
