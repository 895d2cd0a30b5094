"""Memory-mode propagation: SAM2's video predictor fed from memory.

SAM2's ``SAM2VideoPredictor.init_state`` wants a JPEG folder or an MP4 (8-bit, re-encoded). Here the
inference state is built directly and the predictor's per-frame feature lookup
(``_get_image_feature``) is overridden to read the slice features from the segmenter's embedding
cache, so frames are the windowed float slices, nothing is written to disk, and embeddings computed
for clicks or by prefetch are reused.

The walk over slices is the shared driver (:func:`~napari_medprompt.segment.propagation.
propagate_by_projection`): this module supplies a *stateful* ``predict_next`` that runs SAM2's own
per-frame tracking step (``_run_single_frame_inference`` -> ``track_step``: memory attention over
the seed frames and the recent frames of the current run, mask decoder, memory encoder). Seeds
(prompted or corrected masks on any slice, any number of objects) enter through SAM2's
``add_new_mask`` as conditioning frames, exactly as in SAM2's interactive demo, so a correction
re-propagates from there.

Memory stays bounded: per object only the recent frames SAM2 can still read (its memory bank and
object pointers, 16 frames at most) are kept in the state; frame features live in the embedding
cache under its byte budget; on CUDA the state can be offloaded to the CPU (``offload_state``).

``memory_frames`` (fast setting): SAM2 attends to the seed frames plus the last 6 frames. Fewer
past frames make memory attention cheaper; the temporal position encodings are re-indexed so the
k most recent frames and the seed frames keep the encodings the model was trained with (this is
SAM2 with a shorter memory, not another model). Its effect is measured in the benchmarks.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

_KEEP_FRAMES = 16  # SAM2 reads at most max(num_maskmem - 1, max_obj_ptrs_in_encoder) past frames


def _install_feature_lookup(net) -> None:
    """Let ``net`` read frame features from ``inference_state["medprompt_features"]`` (once per net)."""
    if getattr(net, "_medprompt_lookup_installed", False):
        return
    original = type(net)._get_image_feature

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        source = inference_state.get("medprompt_features")
        if source is None:  # a state made by SAM2's own init_state: original behaviour
            return original(self, inference_state, frame_idx, batch_size)
        fpn, pos = source(frame_idx)
        backbone_out = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in fpn],
            "vision_pos_enc": [p.expand(batch_size, -1, -1, -1) for p in pos],
        }
        return (None,) + self._prepare_backbone_features(backbone_out)

    def _iou_hook(module, args, output):
        net._medprompt_last_iou = output[1]

    net._get_image_feature = types.MethodType(_get_image_feature, net)
    net.sam_mask_decoder.register_forward_hook(_iou_hook)
    net._medprompt_last_iou = None
    net._medprompt_lookup_installed = True


def new_inference_state(seg, offload_state: bool = False) -> dict:
    """A SAM2 video inference state over the segmenter's bound volume, features from its cache."""
    import torch

    h, w = seg.slice_shape
    device = torch.device(seg.device)

    dtype = None if seg.memory_bf16 else torch.float32  # autocast takes bfloat16 features as they are

    def features(z: int):
        f = seg.features(int(z))
        fpn = [f["fpn0"], f["fpn1"], f["fpn2"]]
        if dtype is not None:
            fpn = [t.to(dtype) for t in fpn]
        return fpn, [p.to(fpn[0].dtype) for p in seg.pos_enc(f)]

    return {
        "images": None,  # never read: frames come from `medprompt_features`
        "medprompt_features": features,
        "num_frames": seg.n_slices,
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": offload_state,
        "video_height": h,
        "video_width": w,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": {},
        "obj_idx_to_id": {},
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


@contextlib.contextmanager
def memory_bank(net, memory_frames: int | None):
    """Temporarily let ``net`` attend to only ``memory_frames`` past frames (None: SAM2's default)."""
    import torch

    full = net.num_maskmem
    if memory_frames is None or memory_frames >= full - 1:
        yield
        return
    k = int(memory_frames)
    if k < 1:
        raise ValueError(f"memory_frames must be at least 1, got {memory_frames}")
    old_tpos = net.maskmem_tpos_enc
    net.num_maskmem = k + 1
    # index j < k: the frame j+1 slices back (as in the full model); index k: the seed frames (was 6)
    net.maskmem_tpos_enc = torch.nn.Parameter(
        torch.cat([old_tpos[:k], old_tpos[full - 1 :]], 0), requires_grad=False
    )
    try:
        yield
    finally:
        net.num_maskmem = full
        net.maskmem_tpos_enc = old_tpos


@dataclass
class _Run:
    object_id: int
    step: int
    last: int
    masks: list = field(default_factory=list)  # masks returned in this run (the driver hands one back)


class MemoryPropagator:
    """A stateful ``predict_next(z, prev_mask, object_id)`` backed by SAM2's video predictor.

    The driver calls it run by run (one object, one seed, one direction); a call whose ``prev_mask``
    is not a mask this object returned in the current run starts a new run from the seed next to
    ``z`` (its non-conditioning memory is cleared, the seed frames stay).
    """

    def __init__(self, seg, seeds: Mapping[int, Mapping[int, np.ndarray]], *, memory_frames=None,
                 offload_state: bool = False, patience: int = 2) -> None:
        self.seg = seg
        self.net = seg.net
        self.seeds = {int(o): {int(z): np.asarray(m, dtype=bool) for z, m in per.items()}
                      for o, per in seeds.items()}
        self.memory_frames = memory_frames
        self.offload_state = offload_state
        self.state: dict | None = None
        self._run: _Run | None = None
        self.frames_tracked = 0
        # the driver hands back the last *good* mask, up to `patience` slices old
        self._keep_masks = int(patience) + 2

    def _ensure_state(self) -> None:
        import torch

        if self.state is not None:
            return
        _install_feature_lookup(self.net)
        self.state = new_inference_state(self.seg, self.offload_state)
        with torch.inference_mode(), self.seg._autocast(self.seg.memory_bf16):
            for oid, per in self.seeds.items():
                for z, m in sorted(per.items()):
                    self.net.add_new_mask(self.state, z, oid, m)
            self.net.propagate_in_video_preflight(self.state)

    def _start_run(self, z: int, prev_mask: np.ndarray, object_id: int) -> _Run:
        per = self.seeds.get(object_id, {})
        fwd = (z - 1) in per and np.array_equal(per[z - 1], prev_mask)
        bwd = (z + 1) in per and np.array_equal(per[z + 1], prev_mask)
        if not (fwd or bwd):
            raise RuntimeError(
                f"memory propagation: slice {z} of object {object_id} does not follow a seed slice"
            )
        step = 1 if fwd else -1
        obj_idx = self.state["obj_id_to_idx"][object_id]
        self.state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"].clear()
        return _Run(object_id, step, z - step)

    def predict_next(self, z: int, prev_mask: np.ndarray, object_id: int):
        import torch
        import torch.nn.functional as F

        self._ensure_state()
        run = self._run
        if not (
            run is not None
            and run.object_id == object_id
            and z == run.last + run.step
            and any(prev_mask is m for m in run.masks)
        ):
            run = self._run = self._start_run(z, prev_mask, object_id)
        state, net = self.state, self.net
        obj_idx = state["obj_id_to_idx"][object_id]
        out_dict = state["output_dict_per_obj"][obj_idx]
        with torch.inference_mode(), self.seg._autocast(self.seg.memory_bf16), memory_bank(
            net, self.memory_frames
        ):
            out, pred_masks = net._run_single_frame_inference(
                inference_state=state,
                output_dict=out_dict,
                frame_idx=z,
                batch_size=1,
                is_init_cond_frame=False,
                point_inputs=None,
                mask_inputs=None,
                reverse=run.step < 0,
                run_mem_encoder=True,
            )
            iou = net._medprompt_last_iou
            score = float(iou.float().max()) if iou is not None else float("nan")
            up = F.interpolate(pred_masks.float(), self.seg.slice_shape, mode="bilinear", align_corners=False)
            mask = (up[0, 0] > 0).cpu().numpy()
            obj = float(torch.sigmoid(out["object_score_logits"].float()).reshape(-1)[0])
        non_cond = out_dict["non_cond_frame_outputs"]
        non_cond[z] = out
        state["frames_tracked_per_obj"][obj_idx][z] = {"reverse": run.step < 0}
        for f in [f for f in non_cond if abs(f - z) > _KEEP_FRAMES]:
            del non_cond[f]
        run.last = z
        run.masks = (run.masks + [mask])[-self._keep_masks :]
        self.frames_tracked += 1
        return mask, score, obj
