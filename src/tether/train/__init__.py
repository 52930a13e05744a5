"""Training recipes: each is a config class and a ``run(cfg)`` that reads top to bottom."""
