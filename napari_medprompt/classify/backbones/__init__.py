"""Frozen image backbones (open_clip CLIP ViTs, ResNet-50) behind one interface."""
