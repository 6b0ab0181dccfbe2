"""The police and bureau side: the receiving console (`schoolgate console`).

Another program than the daemon in `gateway/`: it shares only the contract and the key formats
with it, so it imports only gateway's shared vocabulary (`gateway.core.auth`,
`gateway.core.contract`, `gateway.core.keys`, `gateway.core.events`, `gateway.uplink.mqtt`,
`gateway.core.backoff`), and nothing in `gateway/`
imports it except `gateway.cli`, which registers the `console` subcommand. Importing this package
or `receiver.cli` loads nothing heavy (no `rich`, no `cryptography`): the daemon's command line
builds its parser with it.

- `receiver.state`: what the console knows (alarm board, de-duplication, seq gaps, silence); pure.
- `receiver.console`: the MQTT session, verification and the queue of outgoing commands.
- `receiver.view`: the terminal view, drawn with `rich`, sized to the terminal.
- `receiver.cli`: the command line, `--json` output and the interactive terminal around them.
"""
