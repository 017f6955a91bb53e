"""Host-side NumPy tasks for RL of language-model policies.

`base.make_task(config)` builds a task by name; `base.Task` is the protocol
the training loop uses and `batching.scores_to_arrays` pads task scores into
the arrays of `cajax.Rollouts`.
"""
