"""instaseg.export."""
