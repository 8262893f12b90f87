"""alphapo.training (under construction)."""
