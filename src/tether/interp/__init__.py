"""Looking inside a model: named sites in any architecture (:mod:`tether.interp.sites`), activations captured
at them (:mod:`tether.interp.capture`), linear probes with the difference-of-means baseline beside them
(:mod:`tether.interp.probes`), directions, steering and weight orthogonalisation
(:mod:`tether.interp.directions`), and sparse autoencoders (:mod:`tether.interp.sae`)."""
