"""Weight quantization: NOVAQ (normalize, residual vector codebooks, teacher-guided refinement) and a
round-to-nearest baseline."""
