"""tether: align language models and prove it.

Importing ``tether`` is cheap on purpose: torch and transformers load only when a
module that needs them is imported.
"""

__version__ = "0.1.0"
