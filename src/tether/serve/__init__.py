"""``tether serve``: an OpenAI-compatible gateway in front of a model, with API keys and scopes.

- :mod:`tether.serve.keys`: keys created with scopes, shown once, stored hashed (SQLite by default, any
  SQLAlchemy URL, PostgreSQL included);
- :mod:`tether.serve.batching`: concurrent requests sharing ``generate`` calls;
- :mod:`tether.serve.app`: the FastAPI application (``/v1/models``, ``/v1/chat/completions`` streamed or
  not, ``/v1/completions``), errors in OpenAI's shape.
"""
