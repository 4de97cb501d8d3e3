"""instaseg.models."""
