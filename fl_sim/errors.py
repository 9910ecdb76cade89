"""One error family for bad input: the CLI prints its message as one line and exits 2."""


class FlSimError(Exception):
    """Bad input from the user (config, data path, CLI flag). Message is one line."""


class ConfigError(FlSimError):
    """A config file or override is invalid."""


class DataError(FlSimError):
    """A data file is missing, truncated or in the wrong format."""


class SnapshotError(FlSimError):
    """A snapshot is missing, or fails its checksum."""
