"""geolink-edge: cross-view geo-localization for drones (GeoLink), from training to the onboard runtime."""

__version__ = "0.1.0"
