"""Healing after a pruning wave: QLoRA micro-heal with a masked merge, RigL regrowth, stop-loss."""
