"""alphapo.data (under construction)."""
