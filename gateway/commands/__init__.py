"""Commands from receivers and from the local control socket: verify, dispatch, answer."""
