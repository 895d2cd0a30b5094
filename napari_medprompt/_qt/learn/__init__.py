"""The Learn dock: example set, training in the background, model versions, predictions and heat maps."""
