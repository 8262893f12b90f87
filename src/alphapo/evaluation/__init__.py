"""alphapo.evaluation (under construction)."""
