"""Small helpers shared across instaseg (no imports of other instaseg packages)."""
