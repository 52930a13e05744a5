"""Multi-stage jobs that compose recipes through their configs and run directories."""
