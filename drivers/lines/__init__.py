"""Line owners: one object per physical line (a serial port or a TCP connection), and the factory
the app uses to build them from config."""

from __future__ import annotations

from drivers.lines.modbus import ModbusLine
from drivers.lines.serial import SerialLine
from edge_config.models import LineConfig, ModbusRtuLine, ModbusTcpLine

Line = ModbusLine | SerialLine


def make_line(name: str, config: LineConfig) -> Line:
    """The owner of line `name`."""
    if isinstance(config, ModbusTcpLine | ModbusRtuLine):
        return ModbusLine(name, config)
    return SerialLine(name, config)
