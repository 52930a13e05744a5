"""Verification of the small networks tether owns (guard heads over frozen features, probes, reward heads):
certified bounds (:mod:`tether.verify.bounds`), word-substitution sets (:mod:`tether.verify.substitutions`),
and properties exported as ONNX + VNN-LIB and checked again by an exact MILP (:mod:`tether.verify.export`)."""
