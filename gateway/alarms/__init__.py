"""What an alarm is on the box: latches, acknowledgement and escalation, drills."""
