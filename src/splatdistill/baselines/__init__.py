"""Baselines compared against Splat-and-Distill (``fit3d``: a FiT3D-style per-scene optimised feature field)."""
