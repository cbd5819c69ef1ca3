"""A run: its settings, the assembly of a trainer, the run folder, the choice among short
models, figures and the report."""
