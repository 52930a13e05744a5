"""Looking inside a model: named sites in any architecture, activations captured at them (more to come:
probes, directions, SAEs, attribution and patching)."""
