"""Training: the objective, the loop (Trainer), the phase and hook around it, and several
processes (DDP)."""
