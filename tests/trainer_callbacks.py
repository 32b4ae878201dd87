"""Trainer callbacks the stage tests share: a simulated crash at a step, and the steps a run took."""

from __future__ import annotations

from transformers import TrainerCallback


class CrashAt(TrainerCallback):
    """Raises RuntimeError('simulated crash') at the end of optimizer step `step`."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


class CountSteps(TrainerCallback):
    """Records the global step after every optimizer step (a resumed run starts after its checkpoint)."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
