"""The weight cache: location, offline message, download progress reaching the caller."""

from __future__ import annotations

import pytest

from napari_medprompt.models.cache import WeightsUnavailable, cache_dir, fetch_hf_file


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDPROMPT_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir("hf") == tmp_path / "c" / "hf" and (tmp_path / "c" / "hf").is_dir()


def test_offline_and_not_cached_says_how_to_fix_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE is set.*local checkpoint"):
        fetch_hf_file("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt")


def test_download_progress_reaches_the_callback(tmp_path, monkeypatch):
    """huggingface_hub drives the tqdm class it is given; our class must turn it into byte counts."""
    import huggingface_hub

    def fake_download(repo_id, filename, cache_dir=None, local_files_only=False, tqdm_class=None):
        if local_files_only:
            raise FileNotFoundError(filename)  # not cached yet
        bar = tqdm_class(total=300, unit="B", unit_scale=True, desc=filename)
        for _ in range(3):
            bar.update(100)
        bar.close()
        out = tmp_path / filename
        out.write_bytes(b"x" * 300)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    seen = []
    path = fetch_hf_file("org/repo", "w.pt", local_files_only=False, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == b"x" * 300
    assert seen == [(100, 300), (200, 300), (300, 300)]


def test_network_failure_is_explained(monkeypatch):
    import huggingface_hub

    def failing(repo_id, filename, cache_dir=None, local_files_only=False, tqdm_class=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(WeightsUnavailable, match="offline.*choose it as a local checkpoint"):
        fetch_hf_file("org/repo", "w.pt", local_files_only=False)
