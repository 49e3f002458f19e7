"""Low-rank factorization after the waves (the design's "Quantize + Low-Rank Merge" stage)."""
