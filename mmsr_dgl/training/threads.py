"""Intra-op threads chosen by measurement while training runs.

On a machine of its own a step runs about 1.4 times faster on 2 threads than on 1; while another process keeps
one of the 2 cores busy, 2 threads run 2 to 5 times slower than 1 (each parallel operation waits for the thread
that lost its core). Neither count is right for every machine and moment, so training measures both: it runs
`window` steps on the other count every so often, keeps the faster, and checks less often while the choice holds
(BENCHMARKS.md, "Threads").
"""

from __future__ import annotations

import torch


class ThreadChooser:
    """Call `step_done(seconds)` after every training step; it sets torch's thread count between steps."""

    def __init__(
        self, most: int, adaptive: bool = True, window: int = 16, first_check: int = 16, longest_hold: int = 2048
    ):
        """Start on `most` threads; `adaptive`: also try 1 thread and keep the faster."""
        self.options = (most, 1) if adaptive and most > 1 else (most,)
        self.window, self.hold, self.longest_hold = window, first_check, longest_hold
        self.current = most
        self.since, self.recent, self.trial = 0, [], None  # trial: the other count's step times while tried
        torch.set_num_threads(most)

    def step_done(self, seconds: float) -> None:
        if len(self.options) == 1:
            return
        if self.trial is not None:
            self.trial.append(seconds)
            if len(self.trial) > self.window:  # the first step after a switch warms the new threads up
                self._decide()
            return
        self.recent = (self.recent + [seconds])[-self.window :]
        self.since += 1
        if self.since >= self.hold and len(self.recent) == self.window:
            self.trial = []
            torch.set_num_threads(self._other())

    def _other(self) -> int:
        return self.options[1] if self.current == self.options[0] else self.options[0]

    def _decide(self) -> None:
        other = sum(self.trial[1:]) / self.window
        mine = sum(self.recent) / self.window
        if other < mine:
            self.current, self.hold = self._other(), self.window * 4
        else:
            self.hold = min(self.hold * 2, self.longest_hold)  # the choice held: check it less often
        torch.set_num_threads(self.current)
        self.since, self.recent, self.trial = 0, [], None
