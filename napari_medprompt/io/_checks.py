"""Checks every reader applies to the voxels it returns: dimensionality and non-finite values.

Policy (what a clinician reading the image needs):

- **NaN / inf voxels.** A volume with *some* non-finite voxels (typical of processed MRI/PET
  NIfTIs, where NaN marks "outside the mask") is opened with those voxels set to the lowest finite
  value of the image (background), and a warning naming the file and the number of voxels replaced
  goes into ``Volume.warnings`` (napari shows it as a notification). The file itself is never
  changed. A volume with *no* finite voxel at all is refused with :class:`ImageReadError`.
- **More than three dimensions.** Singleton extra axes are dropped. A real 4D series (fMRI, DWI,
  multi-phase) is refused with a message giving its shape and how to split it: annotating one
  volume silently picked out of a time series would be misleading.
"""

from __future__ import annotations

import numpy as np

from napari_medprompt.io.errors import ImageReadError


def drop_extra_axes(data: np.ndarray, path, spatial_ndim_max: int = 3) -> np.ndarray:
    """Squeeze trailing singleton axes beyond ``spatial_ndim_max``; refuse true 4D+ data."""
    if data.ndim <= spatial_ndim_max:
        return data
    extra = data.shape[spatial_ndim_max:]
    if all(n == 1 for n in extra):
        return data.reshape(data.shape[:spatial_ndim_max])
    raise ImageReadError(
        path,
        f"{data.ndim}D image of shape {tuple(data.shape)} ({int(np.prod(extra))} volumes); "
        "MedPrompt opens one 3D volume per file. Split it into 3D files first "
        "(e.g. nibabel.funcs.four_to_three or fslsplit).",
    )


def replace_non_finite(data: np.ndarray, path, warnings: list[str]) -> np.ndarray:
    """Set NaN/inf voxels to the lowest finite value and record a warning; refuse all-NaN data."""
    if data.dtype.kind not in "fc":
        return data
    finite = np.isfinite(data)
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == 0:
        return data
    if n_bad == finite.size:
        raise ImageReadError(path, "every voxel is NaN or infinite; there is no image to show")
    fill = data[finite].min()
    if not data.flags.writeable:
        data = np.array(data)
    data[~finite] = fill
    warnings.append(
        f"{path}: {n_bad} voxel(s) ({100.0 * n_bad / finite.size:.2g}%) were NaN or infinite and "
        f"are shown as {float(fill):g} (the lowest finite value); the file is unchanged"
    )
    return data
