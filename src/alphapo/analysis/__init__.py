"""alphapo.analysis (under construction)."""
