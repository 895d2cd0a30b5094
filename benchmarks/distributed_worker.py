"""One torchrun worker of the ``distributed`` benchmark group: cached-feature extraction sharded over
the ranks and gathered once, as ``medprompt-train`` does it; rank 0 prints ``{"images", "seconds"}``."""

from __future__ import annotations

import json
import sys
import time


def main(n_images: int) -> None:
    import torch

    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.train import distributed as dd

    info = dd.init_from_env("cpu")
    bb = create_backbone("test-vit-tiny", "random", device="cpu")
    size = int(getattr(bb, "image_size", 224) or 224)
    x = torch.randn(n_images, 3, size, size, generator=torch.Generator().manual_seed(0))
    dd.barrier()
    t0 = time.perf_counter()
    mine = torch.as_tensor(dd.shard_indices(n_images))
    out = []
    with torch.no_grad():
        for i in range(0, len(mine), 16):
            out.append(bb.encode_image(x[mine[i : i + 16]]).float())
    feats = dd.gather_ordered(torch.cat(out), n_images)
    dt = time.perf_counter() - t0
    assert feats.shape[0] == n_images
    if info.is_main:
        print(json.dumps({"images": n_images, "seconds": dt, "processes": info.world_size}))
    dd.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
