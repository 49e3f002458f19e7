"""Pruning: importance scores, mask selection, the SparseGPT solver, structured neuron removal."""
