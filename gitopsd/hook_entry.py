"""What hooks/pre-receive runs: `python -I -S gitopsd/hook_entry.py --config FILE [--database FILE]`.

`-I` keeps the pusher's environment variables (PYTHONPATH, ...) and the working directory out of
Python's import path; `-S` skips site-packages, which saves about 20 ms per push. The hook needs
only the standard library and this package, whose folder is added to the path here, after the
standard library's, so nothing installed beside gitopsd can stand in for a standard module.
"""

import os
import sys

sys.path.append(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from gitopsd.gate.receive import main  # noqa: E402  (the path must be set first)

sys.exit(main(sys.argv[1:]))
