"""The embedded ``rooms`` dataset: procedurally furnished rooms rendered on the CPU with full ground truth."""

from .build import RoomsParams, build_rooms, ensure_rooms
from .layout import CLASS_NAMES

__all__ = ["CLASS_NAMES", "RoomsParams", "build_rooms", "ensure_rooms"]
