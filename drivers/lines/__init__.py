"""Line owners: one object per physical line (a TCP connection or a serial port)."""
