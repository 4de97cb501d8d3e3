"""instaseg.inference."""
