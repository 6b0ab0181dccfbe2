"""The durable log on the box: the SQLite file, the outbox, the memory spill, retention and read-
only inspection.
"""
