"""Simulation in the loop: a camera rendered from a map at ArduPilot SITL's true pose, and the flight."""
