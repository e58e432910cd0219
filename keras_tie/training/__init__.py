"""Training: the TIE model, its epoch-level callbacks and the run driver."""
