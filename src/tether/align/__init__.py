"""Shape a model with its own outputs: constitutional AI (critique -> revise, AI feedback), context
distillation."""
