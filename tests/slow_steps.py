"""Python source that slows every training step of the process that runs it (by replacing the
training loop's progress bar), so that a kill or a signal from a test lands mid-training however
fast the machine is. Child processes run it before the CLI, or import it as sitecustomize."""


def slow_steps_source(seconds: float) -> str:
    return f"""import time
import tradeoff.training.loop
class SlowBar:
    def update(self, n):
        time.sleep({seconds})
    def close(self):
        pass
tradeoff.training.loop.progress_bar = lambda **options: SlowBar()
"""
