"""A faithful local Kling Multi-Image to Video server on aiohttp.web.

The demo default, the test double of the integration tests and the benchmark target. It shares
no code with the client (a simulator that shared the client's code would share its bugs)::

    async with Simulator(concurrency=5, gen_seconds=0.2) as sim:
        ...  # sim.url, sim.video_url, sim.access_key, sim.secret_key, sim.api_key, sim.stats
"""

from ._cli import add_arguments, serve
from ._clock import SimClock
from ._config import FaultConfig, SimulatorConfig
from ._content import VideoContent
from ._faults import Fault, FaultInjector, parse_fault
from ._server import Simulator
from ._stats import SimulatorStats

__all__ = [
    "Fault",
    "FaultConfig",
    "FaultInjector",
    "SimClock",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "VideoContent",
    "add_arguments",
    "parse_fault",
    "serve",
]
