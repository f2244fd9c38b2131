"""(filled in by the ibp work)."""
