"""Fleet-scale simulation: thousands of devices on a virtual clock, driving the production server
strategies, admission, codecs and ORT trainer (no second implementation of the maths).

    events.py       virtual clock + event heap (deterministic tie-break)
    profiles.py     heavy-tailed speeds, stragglers, bandwidth, daily availability windows
    trace.py        availability from a CSV trace `device,start,end`
    training.py     one shared trainer re-pointed at each device's slice
    uplink.py       error feedback + codec + encode_update: the bytes counted are real messages
    downlink.py     models pushed to connected devices: deltas or whole offers, real sizes
    server_side.py  Admission.admit + Strategy.apply/tick, optionally recorded for replay
    engine.py       one run: sync (rounds, over-selection, deadline) or async (concurrency)
    runner.py       strategy specs -> production strategy objects; one run per spec
    world.py        data slices (Dirichlet or --data DIR), fleets per seed, the trainer
    compare.py      every spec on the same fleet/data/seed, several seeds -> report.json + plots
    report.py       time/bytes to target, ratios to sync FedAvg, plots
    cli.py          `fleetlearn simulate`
"""

from fleet.sim.engine import Mode, Point, RunConfig, RunResult, run_simulation
from fleet.sim.profiles import Availability, DeviceProfile, FleetConfig, Windows, make_fleet
from fleet.sim.runner import Experiment, StrategySpec, parse_strategy

__all__ = [
    "Availability",
    "DeviceProfile",
    "Experiment",
    "FleetConfig",
    "Mode",
    "Point",
    "RunConfig",
    "RunResult",
    "StrategySpec",
    "Windows",
    "make_fleet",
    "parse_strategy",
    "run_simulation",
]
