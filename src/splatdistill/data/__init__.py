"""Posed multi-view scenes: the on-disk format, the embedded ``rooms`` dataset, loaders for user data."""
