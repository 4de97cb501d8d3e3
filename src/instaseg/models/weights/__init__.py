"""Published and local weights: downloads through the libraries' caches, safe reading, loading by name."""
