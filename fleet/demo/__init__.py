"""`fleetlearn demo`: a live fleet of real agents, a real server and a real broker in one command.

cli.py            the subcommand (options)
run.py            data, model, keys, one or two fleet runs, report, plot, summary
orchestrator.py   one run: start parts, drive device lives, watch, stop, RunReport
parts.py          the narrow protocols the orchestrator drives
real_parts.py     broker + agents; server_part.py: the server
device.py         one agent thread with a counting/dropout link and a slow trainer
life.py           seeded device lives (charging, busy, dropouts, speed)
conditions.py     a life fed to the agent's conditions interface
report.py         report.json schema, writer, validator; plot.py accuracy.png
display.py        live progress; teardown.py clean stop and port checks
"""

__all__: list[str] = []
