"""The shared vocabulary of the daemon and the drivers: the injected clock today; the event
model, backoff, cancellation guard and key formats move here with the restructuring (issue 11).

Pure: imports nothing of ours above it (no drivers, no daemon, no config loader).
"""
