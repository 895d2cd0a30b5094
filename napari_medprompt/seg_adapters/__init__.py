"""Adapters for segmentation models: VLSM-Adapter on CLIPSeg (text prompt -> mask).

- :mod:`.registry`: method names and option schemas (torch-free);
- :mod:`.clipseg`: the frozen CLIPSeg rd64-refined (real config, weight cache, tokeniser, direct calls);
- :mod:`.vlsm`: adapter blocks, the six VLSM-Adapter variants, the decoder-only baseline;
- :mod:`.io`: reload a trained adapter from a checkpoint or model-store version;
- :mod:`.segmenter`: text prompt -> mask on a slice or a volume.

Training goes through the one loop (:func:`napari_medprompt.train.loop.train_iter`) with
:class:`napari_medprompt.train.seg_data.SegData`.
"""
