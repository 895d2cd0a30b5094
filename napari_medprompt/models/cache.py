"""One cache directory for every downloaded weight file, and downloads that explain themselves.

``MEDPROMPT_CACHE_DIR`` overrides the location; otherwise the platform's user cache directory
(``~/.cache/napari-medprompt`` on Linux). Hugging Face files go to ``<cache>/hf`` through
``huggingface_hub``; open_clip weights go to ``<cache>/open_clip``.

Offline use: copy the files once into the cache directory (or point to a local checkpoint path, which
always works without a network), and set ``HF_HUB_OFFLINE=1`` to skip any network attempt.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path

ProgressCallback = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


class WeightsUnavailable(RuntimeError):
    """Weights could not be found locally nor downloaded. The message says how to fix it."""


def cache_dir(sub: str | None = None) -> Path:
    root = os.environ.get("MEDPROMPT_CACHE_DIR")
    if root:
        base = Path(root).expanduser()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("napari-medprompt"))
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _offline_message(repo_id: str, filename: str, err: Exception) -> str:
    target = cache_dir("hf")
    return (
        f"Could not download {filename} from the Hugging Face repository {repo_id} ({type(err).__name__}: "
        f"{err}). If this machine is offline, download the file on a connected machine "
        f"(https://huggingface.co/{repo_id}/blob/main/{filename}) and either choose it as a local "
        f"checkpoint, or copy the Hugging Face cache folder into {target} "
        f"(set MEDPROMPT_CACHE_DIR to use another folder)."
    )


def fetch_hf_file(
    repo_id: str,
    filename: str,
    *,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Return a local path to ``repo_id/filename``, downloading it into the cache on first use.

    A cached copy is used without any network access. ``sha256`` is checked when given (the
    published LFS hash); a mismatch deletes nothing but raises. ``progress`` receives byte counts.
    """
    from huggingface_hub import hf_hub_download

    cache = cache_dir("hf")
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        path = Path(hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=True))
    except Exception:
        if local_files_only:
            raise WeightsUnavailable(
                f"{filename} from {repo_id} is not in the cache {cache} and downloads are disabled "
                "(HF_HUB_OFFLINE is set). Unset it to download, or choose a local checkpoint file."
            ) from None
        extra = {}
        if progress is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            extra["tqdm_class"] = _progress_tqdm(progress)  # older huggingface_hub: no byte counts
        try:
            path = Path(hf_hub_download(repo_id, filename, cache_dir=cache, **extra))
        except Exception as err:  # network, DNS, auth, 404 ...
            raise WeightsUnavailable(_offline_message(repo_id, filename, err)) from err
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise WeightsUnavailable(
                f"{path} does not match its published SHA-256 (expected {sha256[:12]}…, got "
                f"{got[:12]}…): the download is corrupt or was replaced. Delete it and try again."
            )
    return path


def _progress_tqdm(cb: ProgressCallback):
    """A tqdm class for ``hf_hub_download(tqdm_class=...)`` that reports byte counts to ``cb``.

    The bar stays enabled (a disabled tqdm does not count), so a terminal still shows it too.
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _ProgressTqdm(hf_tqdm):
        def update(self, n=1):  # type: ignore[no-untyped-def]
            out = super().update(n)
            if getattr(self, "unit", "") == "B":
                cb(int(self.n), int(self.total) if self.total else None)
            return out

    return _ProgressTqdm
