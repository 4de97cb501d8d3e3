"""instaseg.inference.backends."""
