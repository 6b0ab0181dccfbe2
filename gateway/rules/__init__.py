"""School and alarm rules that sit between drivers and the outbox."""
