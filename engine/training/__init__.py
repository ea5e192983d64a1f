"""Training: the room where the training loop and its samplers live.

The loop itself stays in `engine.train` for now (`train`, with its `Sampler` and `StepObserver` hooks and the
default sampler, `ShuffleAll`). Modules:

- `dynamic`: DynaMS (`DynamicKeep`), training on the examples of smallest classification margin under the
  current model, re-selected per class at fixed intervals, with a keep ratio that decreases over the run.
"""
