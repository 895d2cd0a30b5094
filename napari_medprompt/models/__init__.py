"""Pretrained weights: where they come from, where they are cached, how they load offline."""

from napari_medprompt.models.cache import WeightsUnavailable, cache_dir, fetch_hf_file

__all__ = ["WeightsUnavailable", "cache_dir", "fetch_hf_file"]
