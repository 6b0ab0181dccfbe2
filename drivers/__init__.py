"""Device drivers: one module per device kind, the line owners (`drivers.lines`), the pure codecs,
and `drivers.kinds`, the table that pairs each configured kind with its driver."""
