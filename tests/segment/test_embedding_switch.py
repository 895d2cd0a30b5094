"""Switching images while embeddings are being computed never binds one image's embedding to another:
every cached embedding is keyed by the signature read together with the image it came from, and a
result that arrives after another image was bound is dropped (SAM2.1-tiny, random weights)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.segment.sam2_support import MODEL, checkpoint_file, torch

from napari_medprompt.segment.embedding_cache import EmbeddingCache
from napari_medprompt.segment.sam2_backend import Sam2Segmenter


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 300, size=(2, 64, 64)).astype(np.int16)


def test_cache_drops_a_put_for_an_image_no_longer_bound():
    cache = EmbeddingCache()
    cache.open({"image": "a"}, "a")
    token_a = cache.sig_id
    cache.open({"image": "b"}, "b")
    cache.put(0, {"fpn0": torch.zeros(1)}, sig_id=token_a)  # finished after the switch
    assert not cache.contains(0) and cache.stale_dropped == 1
    assert cache.get(0, sig_id=token_a) is None and cache.get(0) is None
    cache.put(0, {"fpn0": torch.ones(1)}, sig_id=cache.sig_id)
    assert cache.contains(0)


@pytest.fixture(scope="module")
def seg():
    torch.set_num_threads(2)
    return Sam2Segmenter(MODEL, checkpoint=checkpoint_file(), device="cpu")


def test_prefetch_interrupted_by_a_bind_does_not_cache_the_old_image_for_the_new_one(seg):
    a, b = _image(1), _image(2)
    seg.bind(a, modality="CT", key="a")
    inside, go = threading.Event(), threading.Event()
    real_forward = seg.net.forward_image

    def slow_forward(x):  # the encoder is busy with image a's slice when image b is bound
        inside.set()
        assert go.wait(60)
        return real_forward(x)

    seg.net.forward_image = slow_forward
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.extend(seg.prefetch([1])))
    worker.start()
    assert inside.wait(60)
    seg.bind(b, modality="CT", key="b")
    go.set()
    worker.join(120)
    seg.net.forward_image = real_forward
    assert done == [1]
    assert not seg.cache.contains(1), "image a's embedding was stored for image b"
    assert seg.cache.stale_dropped >= 1
    # image b's slice is computed afresh (from b) when it is needed
    calls = seg.encoder_calls
    seg.features(1)
    assert seg.encoder_calls == calls + 1 and seg.cache.contains(1)


@pytest.mark.parametrize("n_switches", [3])
def test_switching_back_and_forth_under_prefetch_load(seg, n_switches):
    """Prefetch keeps running in a thread while the image is switched repeatedly; afterwards each
    cached slice equals the encoding of the image it is cached for."""
    images = [_image(3), _image(4)]
    seg.bind(images[0], modality="CT", key="img")
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                for _ in seg.prefetch([0, 1], cancel=stop):
                    pass
            except Exception:  # noqa: BLE001 - a bind in the middle may interrupt a prefetch
                pass

    worker = threading.Thread(target=load)
    worker.start()
    try:
        for i in range(n_switches):
            seg.bind(images[(i + 1) % 2], modality="CT", key="img")
            threading.Event().wait(0.3)
    finally:
        stop.set()
        worker.join(120)
    final = images[n_switches % 2]
    for z in (0, 1):
        if seg.cache.contains(z):
            cached = seg.cache.get(z)
            fresh = seg._as_feature_dtype(seg._encode(z))
            for k in cached:
                torch.testing.assert_close(cached[k].float(), fresh[k].float())
    assert seg._image is final
