"""Named crash points for fault-injection tests.

``LAMBDA_SALES_FAULT_POINT=<name>`` makes the process kill itself with SIGKILL when it
reaches ``fault_point(<name>)``: the same abrupt end as ``kill -9`` or a lost node, at a
moment a test chooses. Unset (always, outside tests), a fault point does nothing.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "LAMBDA_SALES_FAULT_POINT"


def fault_point(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
