"""The georeferenced satellite-tile index: building from map sources and searching it."""
