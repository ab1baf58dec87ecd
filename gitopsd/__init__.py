"""gitopsd: environment branches of a bare Git repository drive Ansible deployments."""
import sys as _sys

if _sys.argv[1:2] == ["run"]:
    # `gitopsd run`: hold SIGHUP (whose default action ends the process) and the stop signals from the first line
    # of gitopsd that runs, not after the command line's imports; daemon.run acts on them once it can.
    import signal as _signal
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGHUP, _signal.SIGTERM, _signal.SIGINT})

__version__ = "0.1.0"
