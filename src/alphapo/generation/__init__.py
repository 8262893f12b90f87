"""alphapo.generation (under construction)."""
