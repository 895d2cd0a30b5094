"""Adapters for segmentation models (VLSM-Adapter on CLIPSeg, SAM2 adapters)."""
