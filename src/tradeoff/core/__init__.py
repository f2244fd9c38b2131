"""The ground floor: the spec's schema, option checking, registries, errors, devices, process groups, checkpoints, statistics."""
