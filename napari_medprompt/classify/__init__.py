"""Few-shot classification on frozen foundation models (Qt-free; torch imported lazily)."""
