"""Commissioning a gate: `doctor` (is this box ready to go live, and if not, what to do) and
`scan` (what answers on a bus). Library functions the CLI calls; they print nothing."""
