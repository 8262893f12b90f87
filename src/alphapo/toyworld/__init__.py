"""alphapo.toyworld (under construction)."""
