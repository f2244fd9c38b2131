"""Many runs: tables as grids of specs, sweeps (process pool or submitit), synthetic rehearsals, the quickstart, the catalog."""
