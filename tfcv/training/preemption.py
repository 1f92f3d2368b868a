"""Remembers a SIGTERM (preemption notice) until the training loop sees it.

Cloud schedulers and TPU pods announce a preemption with SIGTERM and kill
the process a little later. The training programs install a
`PreemptionFlag` first thing, before the strategy exists: a SIGTERM that
arrives while the cluster forms, the models build or the first step traces
is then remembered, and the loop writes a checkpoint and stops at the next
step boundary.

TensorFlow's multi-worker runtime installs its own C++ SIGTERM handler when
`MultiWorkerMirroredStrategy` connects to the cluster, which silently
replaces Python's; `install()` is idempotent and is called again once the
strategy exists to take the signal back.
"""

import signal


class PreemptionFlag:
    """A SIGTERM handler that only records the signal.

    Example:
      >>> stop = PreemptionFlag()
      >>> stop.install()
      >>> stop.requested
      False
      >>> stop.uninstall()
    """

    def __init__(self):
        self.requested = False
        self._installed = False
        self._previous = signal.SIG_DFL

    def _on_sigterm(self, signum, frame):
        del signum, frame  # Unused.
        self.requested = True

    def install(self):
        """Makes SIGTERM set `requested` (again, if someone replaced us)."""
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        if not self._installed:
            # None: the handler was not set from Python; restore the default.
            self._previous = signal.SIG_DFL if previous is None else previous
            self._installed = True

    def uninstall(self):
        """Puts back the handler that was there before the first install."""
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
