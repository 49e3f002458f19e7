"""The growth-prune-heal loop: a wave is prune (:func:`bird_bone.prune.step.prune_step`), regrow,
heal and judge, the step functions of :mod:`bird_bone.loop.steps`, over scalars and tensors."""
