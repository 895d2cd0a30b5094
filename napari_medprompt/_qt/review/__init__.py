"""The Review dock: slice-by-slice review, accept/reject, save."""
