"""Few-shot training: the one training loop (a generator of events, :mod:`.loop`), datasets with
grouped sampling (:mod:`.data`), several seeds with mean ± sd (:mod:`.seeds`), checkpoints
(:mod:`.checkpoints`), the versioned model store (:mod:`.store`) and the command line (:mod:`.cli`)."""
