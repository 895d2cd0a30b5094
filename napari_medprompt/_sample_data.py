"""napari sample data: the synthetic abdominal CT phantom with its ground-truth labels."""

from __future__ import annotations

from napari_medprompt.imaging.phantom import make_abdominal_phantom
from napari_medprompt.io import opened_images
from napari_medprompt.io.labels_io import default_color
from napari_medprompt.io.layers import META_KEY, display_affine, volume_metadata, volume_to_layer_data


def make_sample_ct(seed: int = 0):
    """[image layer tuple, labels layer tuple] for the phantom (deterministic from ``seed``)."""
    vol, labels, names = make_abdominal_phantom(seed=seed)
    image = volume_to_layer_data(vol)
    md = volume_metadata(vol)
    opened_images.remember(image[1]["metadata"][META_KEY])  # for label layers made on it later
    label_meta = {
        META_KEY: md,
        "label_names": {int(k): v for k, v in names.items()},
        "label_info": {int(k): {"name": v, "color": default_color(k)} for k, v in names.items()},
    }
    labels_layer = (
        labels,
        {"name": "phantom ground truth", "scale": tuple(vol.spacing), "affine": display_affine(vol),
         "metadata": label_meta,
         "opacity": 0.4},
        "labels",
    )
    return [image, labels_layer]
