"""Spec building: YAML layers into a validated Spec, and the dataset's protocol defaults for unset fields."""
