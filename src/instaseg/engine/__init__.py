"""instaseg.engine."""
