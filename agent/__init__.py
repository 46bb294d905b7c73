"""The on-device agent. Imports protocol and transport; never server, models or torch.

cli.py         `fleetlearn agent --config agent.toml`: wiring, signals, --report
config.py      the TOML file -> frozen dataclasses (ConfigError names the key)
conditions.py  battery / power / CPU / temperature / metered, from sysfs + psutil (+ fake)
policy.py      pure eligibility decision with hysteresis
state.py       the agent's life as an Enum state machine
runtime.py     the loop: offers in (signature checked), training, updates out, acks in
update.py      round result -> ClientUpdate with error feedback (pure)
store.py       durable state: sequence numbers, outbox, residual, progress (atomic writes)
personal.py    global/personal ONNX inference files for the device's own apps
backend.py     which trainer backend runs here, and why (ORT wheel only on x86_64)
trainer/, data.py, artifacts.py   on-device training (the trainer engineer's)
"""

__all__: list[str] = []
