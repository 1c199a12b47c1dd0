"""The training methods ``sj-distill bench train`` compares, by name (no torch import, so the
CLI can list them without loading torch)."""

METHODS = ("bptt", "rate", "rate_sweep", "sltt", "ottt", "memopt1", "memopt2", "memopt3",
           "memopt4")
