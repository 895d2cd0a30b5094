"""napari dock widgets: the only place Qt and napari are imported."""
