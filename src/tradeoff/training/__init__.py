"""Training one model: the loop, its snapshots, its learning curve, and the surrogate a poisoning method trains."""
