"""The world: a procedurally generated, gold-labelled assistant world and its base model.

Every prompt carries a gold label and every response can be graded exactly, so the reward a
model is trained on (annotators, reward models) is separate from the gold performance that
is measured. Deterministic from a seed; ``WORLD_VERSION`` changes whenever generation changes.
"""

from tether.world.spec import WORLD_VERSION, World, WorldConfig, build_world

__all__ = ["WORLD_VERSION", "World", "WorldConfig", "build_world"]
