"""`fleetlearn simulate` options for the issue-16 levers: server lr schedule, async over-commit."""

from __future__ import annotations

import argparse

import pytest

from fleet.sim.cli import add_arguments, downlink_codecs, parse_lr_schedule, server_optimizer
from fleet.sim.runner import specs_for
from protocol.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_lr_schedule_is_a_toml_inline_table() -> None:
    table = parse_lr_schedule('{name = "cosine", total_steps = 300, min_factor = 0.1}')
    assert table == {"name": "cosine", "total_steps": 300, "min_factor": 0.1}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("cosine", "TOML inline table"),  # a bare word is not a table
        ("3", "expected a table"),
        ('{name = "linear"}', "lr_schedule.name"),  # unknown schedule
        ('{name = "step", gamma = 0}', "gamma"),  # out of range
        ('{name = "step", every = 10, speed = 2}', "lr_schedule.speed"),  # unknown key
    ],
)
def test_bad_lr_schedules_are_config_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_lr_schedule(text)


def test_server_optimizer_from_the_flags() -> None:
    assert server_optimizer(_args()) is None  # FedBuff's own step at --fedbuff-lr
    assert server_optimizer(_args("--fedbuff-momentum", "0.5")) is None  # the legacy path
    sched = '{name = "cosine", total_steps = 300, min_factor = 0.1}'
    assert server_optimizer(_args("--lr-schedule", sched)) == {
        "name": "sgd",
        "lr": 1.0,
        "lr_schedule": {"name": "cosine", "total_steps": 300, "min_factor": 0.1},
    }
    with_momentum = server_optimizer(
        _args("--lr-schedule", '{name = "step", every = 40}', "--fedbuff-momentum", "0.5")
    )
    assert with_momentum == {
        "name": "avgm",
        "lr": 1.0,
        "beta1": 0.5,
        "lr_schedule": {"name": "step", "every": 40},
    }
    adam = server_optimizer(_args("--server-optimizer", "adam", "--fedbuff-lr", "0.003"))
    assert adam == {"name": "adam", "lr": 0.003}


def test_async_concurrency_flag() -> None:
    assert _args().async_concurrency is None
    assert _args("--concurrency", "50", "--async-concurrency", "200").async_concurrency == 200


def test_downlink_codec_axis() -> None:
    assert downlink_codecs(_args()) == [None]  # whole offers only
    axis = downlink_codecs(_args("--downlink-codec", "none", "--downlink-codec", "int4"))
    assert axis[0] is None and axis[1] is not None and axis[1]["name"] == "int4"
    specs = specs_for(["fedbuff:5"], [{"name": "float32"}], axis)
    assert [s.label for s in specs] == [
        "fedbuff-K5-polynomial/float32",
        "fedbuff-K5-polynomial/float32/down-int4",
    ]
    with pytest.raises(ConfigError):
        downlink_codecs(_args("--downlink-codec", "int9"))
