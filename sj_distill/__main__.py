"""``python -m sj_distill`` (also what ``torchrun -m sj_distill`` runs)."""
from .cli import main

raise SystemExit(main())
