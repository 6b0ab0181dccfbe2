"""The guard's local page: a live view of the gate for the gatehouse screen, and three guarded
actions (reset an alarm, start a test press, silence the local siren).

`view` is the seam to the daemon (`GuardSource`), `server` serves the page (`serve`), `pin`
hashes and checks PINs and limits failed attempts, `catalogue` holds every string the page shows
in Chinese and English, `memory_source` is an in-memory `GuardSource` for tests and screenshots.
Nothing here moves a bollard or unlocks a door.
"""
