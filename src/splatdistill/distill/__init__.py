"""Splat-and-Distill: upsampling, blending, student/teacher, heads, losses, trainer."""
