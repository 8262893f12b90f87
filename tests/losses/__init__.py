"""Tests of alphapo.losses (a package so that basenames such as test_properties.py do not clash)."""
