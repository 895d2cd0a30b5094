"""The SAM2 click path against the plain ``SAM2ImagePredictor`` on the same network and slice.

Float32 on both sides (like for like), SAM2.1-tiny from its real config with random weights loaded
from a checkpoint file in SAM2's format, a non-square 56 x 88 slice (a height/width swap anywhere
would move or reshape the masks). The masks must agree: the reordered decoder and the cached
first-layer projections change only float rounding, and with random weights the logits are small
(|logit| ~ 0.1-0.5), so a real difference in what is computed flips many pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.segment.sam2_support import MODEL, checkpoint_file, torch

import napari_medprompt.segment.sam2_backend as backend
from napari_medprompt.segment import Prompt
from napari_medprompt.segment.sam2_backend import Sam2Segmenter

H, W = 56, 88  # rows, columns: not square


def _slice() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.normal(-60, 25, size=(H, W)).astype(np.float32)
    yy, xx = np.mgrid[:H, :W]
    img[((yy - 20) / 12.0) ** 2 + ((xx - 60) / 20.0) ** 2 < 1] = 220  # an ellipse right of centre
    img[40:50, 8:30] = 700  # a bright bar bottom left
    return img


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(2)
    seg = Sam2Segmenter(MODEL, checkpoint=checkpoint_file(), device="cpu", decoder_bf16=False, encoder_bf16=False)
    seg.bind(_slice(), modality="CT")
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    plain = SAM2ImagePredictor(seg.net)
    plain.set_image(np.repeat(seg.slice_unit(0)[..., None], 3, axis=2))
    return seg, plain


def _plain_mask(plain, prompt: Prompt, multimask: bool):
    xy = lab = box = None
    if len(prompt.points):
        xy, lab = np.asarray(prompt.points, float)[:, ::-1].copy(), np.asarray(prompt.labels)
    if prompt.box is not None:
        r0, c0, r1, c1 = prompt.box
        box = np.array([c0, r0, c1, r1], float)
    masks, scores, _ = plain.predict(point_coords=xy, point_labels=lab, box=box, multimask_output=multimask)
    best = int(np.argmax(scores))
    return masks[best] > 0, float(scores[best])


def _iou(a, b) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


PROMPTS = {
    "lone click (three candidates)": Prompt(points=[[20, 60]], labels=[1]),
    "click near the bottom-left corner": Prompt(points=[[52, 4]], labels=[1]),
    "positive and negative clicks": Prompt(points=[[20, 60], [45, 20], [10, 10]], labels=[1, 0, 1]),
    "box": Prompt(box=(6, 38, 34, 84)),
    "box and a negative click": Prompt(points=[[20, 50]], labels=[0], box=(6, 38, 34, 84)),
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_our_click_path_gives_the_plain_predictors_masks(pair, name):
    seg, plain = pair
    prompt = PROMPTS[name]
    multimask = len(prompt.points) == 1 and prompt.box is None
    ref, ref_score = _plain_mask(plain, prompt, multimask)
    res = seg.predict(0, prompt)
    assert res.mask.shape == (H, W) == ref.shape
    assert 0.05 < ref.mean() < 0.95, "a degenerate reference mask would make the comparison weak"
    assert _iou(res.mask, ref) >= 0.995, name
    assert res.score == pytest.approx(ref_score, abs=1e-3)
    # the same prompt with the rows and columns of the click swapped gives another mask: the check bites
    if len(prompt.points) == 1 and prompt.box is None:
        r, c = prompt.points[0]
        swapped = seg.predict(0, Prompt(points=[[c * H / W, r * W / H]], labels=[1]))
        assert _iou(swapped.mask, ref) < 0.995


def test_a_mask_prompt_gives_the_plain_predictors_mask(pair):
    seg, plain = pair
    prev = np.zeros((H, W), bool)
    prev[8:32, 42:80] = True
    from napari_medprompt.segment.sam2_decoder import mask_to_logits

    res = seg.decode(seg.features(0), Prompt(mask=prev, box=(8, 42, 31, 79)), multimask=False)
    masks, scores, _ = plain.predict(box=np.array([42, 8, 79, 31], float), mask_input=mask_to_logits(prev)[0].numpy(),
                                     multimask_output=False)
    assert _iou(res[0], masks[0] > 0) >= 0.995
    assert res[1] == pytest.approx(float(scores[0]), abs=1e-3)


def test_first_layer_projections_are_computed_once_per_slice_and_not_for_mask_prompts(pair, monkeypatch):
    seg, _ = pair
    calls = []
    real = backend.image_projections

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(backend, "image_projections", spy)
    seg._projections.clear()
    a = seg.predict(0, Prompt(points=[[20, 60]], labels=[1]))
    seg.predict(0, Prompt(points=[[45, 20]], labels=[1]))
    seg.predict(0, Prompt(box=(6, 38, 34, 84)))
    assert len(calls) == 1  # computed on the first click, reused by the next ones
    m = np.zeros((H, W), bool)
    m[10:30, 45:75] = True
    seg.predict(0, Prompt(mask=m))  # a mask prompt changes the image tokens: nothing reused
    assert len(calls) == 1
    again = seg.predict(0, Prompt(points=[[20, 60]], labels=[1]))
    assert np.array_equal(again.mask, a.mask) and len(calls) == 1
