"""Watching a deployed model: drift and change detectors with a false-alarm rate the user sets
(:mod:`tether.monitor.detectors`), and a streaming monitor over request records (:mod:`tether.monitor.stream`).
"""
