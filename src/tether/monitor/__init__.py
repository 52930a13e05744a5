"""Watching a deployed model: drift and change detectors with a false-alarm rate the user sets
(:mod:`tether.monitor.detectors`)."""
