"""Model editing: rewrite what a model says about a subject by changing a few weights directly.

- :mod:`tether.edit.requests`: the request schema every method takes;
- :mod:`tether.edit.updates`: the closed-form updates (ROME, MEMIT, AlphaEdit), pure functions;
- :mod:`tether.edit.model`: where an edit reaches into a model (the MLP output projection), keys, their
  second moment, the value search;
- :mod:`tether.edit.evaluate`: generation-based judging (efficacy, paraphrase, neighbourhood);
- :mod:`tether.edit.bench`: the shared config and run loop (independent and sequential modes);
- :mod:`tether.edit.rome`, :mod:`tether.edit.memit`, :mod:`tether.edit.alphaedit`: the methods and their
  recipes (``tether edit rome|memit|alphaedit``).
"""
