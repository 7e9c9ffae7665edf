"""A synthetic cross-view world: orthophoto, DSM, satellite tiles, drone views, point clouds, flights."""
