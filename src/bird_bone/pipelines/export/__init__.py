"""GGUF export stage: the compressed checkpoint as a GGUF file llama.cpp runs, with a size report."""
