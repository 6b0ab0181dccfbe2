"""schoolgate: the edge gateway daemon for school-gate security devices."""

__version__ = "0.1.0"
