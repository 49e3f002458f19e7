"""Low-rank factorization of linear projections."""
