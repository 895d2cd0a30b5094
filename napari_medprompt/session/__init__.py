"""An annotation session: objects, prompts, per-slice status, provenance, undo, autosave, recovery."""
