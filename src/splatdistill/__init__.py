"""splatdistill: Splat-and-Distill for vision foundation models (Shavin & Benaim, ICLR 2026)."""

__version__ = "0.1.0"
