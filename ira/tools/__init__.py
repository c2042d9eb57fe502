"""Tools that tests, benches and the CLI share: the virtual null-modem, the cable test."""
