"""Armillary: describe a machine once; create, provision, deploy, scale, audit, repair and destroy it."""

__version__ = "0.1.0"
