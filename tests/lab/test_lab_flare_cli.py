"""``flarelab lab holepunch`` without a lab: its arguments, its refusals, the settings it
sends into the namespaces. No root needed (the end-to-end run is in test_lab_flare.py)."""

from __future__ import annotations

import pytest

from flarelab.cli import build_parser, main
from flarelab.lab.flare_nodes import FlareLabSettings


def test_the_lab_command_parses() -> None:
    args = build_parser().parse_args(["lab", "holepunch", "--transport", "quic", "--trials",
                                      "3", "--nat", "symmetric,home_router", "--ipv6",
                                      "--trace", "t.jsonl"])
    assert (args.command, args.lab_command) == ("lab", "holepunch")
    assert (args.transport, args.trials, args.nat, args.ipv6, args.trace) == (
        "quic", 3, "symmetric,home_router", True, "t.jsonl")
    defaults = build_parser().parse_args(["lab", "holepunch"])
    assert (defaults.transport, defaults.trials, defaults.nat) == ("tcp", 1, "home_router")


@pytest.mark.parametrize("argv", [
    ["lab", "holepunch", "--trials", "0"],
    ["lab", "holepunch", "--transport", "udp"],
    ["lab"],
])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_an_unknown_nat_kind_is_refused_before_anything_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "holepunch", "--nat", "bogus"]) == 2
    assert "unknown lab NAT kind 'bogus'" in capsys.readouterr().err
    assert main(["lab", "holepunch", "--nat", "a,b,c"]) == 2


def test_lab_settings_travel_as_json() -> None:
    settings = FlareLabSettings(transport="quic", family=6, port=4242, punch_timeout=1.0)
    data = settings.to_dict()
    assert FlareLabSettings.from_dict({**data, "unknown": 1}) == settings
    assert (FlareLabSettings().autonat_confidence, FlareLabSettings().observers) == (3, 4)
