"""The ``tether`` command line: thin wrappers over configs and recipes, heavy imports deferred."""
