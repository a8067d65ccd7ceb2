"""gpumeter: exact GPU metering, billing and return-on-assets for GPU fleets."""

__version__ = "0.1.0"
