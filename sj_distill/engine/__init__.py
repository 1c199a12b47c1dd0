"""Training engine: recipe runs (teacher stage, student stage), evaluation, checkpoints, DDP."""
