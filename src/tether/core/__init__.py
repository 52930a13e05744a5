"""Foundations every layer may import: typed configs, registries, run directories, seeding."""

from tether.core.errors import TetherError, UserError

__all__ = ["TetherError", "UserError"]
