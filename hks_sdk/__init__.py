"""HKS Functions SDK for AI agents: run generated code as a throwaway function in a sandbox.

    from hks_sdk import functions
    execution = functions.execute(code="print('hi')\\n6 * 7")
    execution.stdout, execution.result, execution.error

Configuration: ``HKS_URL`` (the portal) and ``HKS_AGENT_CREDENTIAL`` (an agent credential of a project), or
an explicit ``Client(url=..., credential=...)``. Depends only on httpx.
"""

from .client import Client, DeployError, HksError
from .execution import Execution, ExecutionError

__all__ = ["Client", "DeployError", "Execution", "ExecutionError", "HksError", "functions"]

from . import functions  # noqa: E402
