"""Run the tap with `python -m tap_bolna`."""

from tap_bolna.tap import TapBolna

TapBolna.cli()
