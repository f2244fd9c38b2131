"""(filled in by the adversarial work)."""
