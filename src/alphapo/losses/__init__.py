"""alphapo.losses (under construction)."""
