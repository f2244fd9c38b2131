"""(filled in by the regularizers work)."""
