"""The Segment dock: prompts, SAM2/classic engines, objects and propagation."""
