"""instaseg.deploy: running models where they serve, built on inference and export.

The backend chooser (`autobackend`: the fastest runtime and precision within an accuracy tolerance) and the
benchmark (latency stage by stage, through the same predictor users call).
"""
