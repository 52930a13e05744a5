"""Looking inside a model: named sites in any architecture (:mod:`tether.interp.sites`), activations captured
at them (:mod:`tether.interp.capture`), linear probes with the difference-of-means baseline beside them
(:mod:`tether.interp.probes`). Directions and steering, SAEs, attribution and patching are to come."""
