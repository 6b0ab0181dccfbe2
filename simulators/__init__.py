"""Device simulators for tests and bench work: one module per device kind, plus virtual serial
ports (`vserial`) to join a simulator and the gateway over a real tty without hardware."""
