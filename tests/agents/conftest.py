# The internal API's fixtures: media and JWT key per test, agent credentials of two projects.
from tests.support.agents import _media_and_keys, agent_credential, outsider_credential  # noqa: F401
