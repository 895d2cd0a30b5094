"""The one training loop (a generator of events), datasets, few-shot sampling, checkpoints."""
