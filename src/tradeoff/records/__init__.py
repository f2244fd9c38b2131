"""What one run hands on and leaves behind: the typed hand-offs and the run folder."""
