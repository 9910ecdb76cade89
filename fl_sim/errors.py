"""One error family: the CLI prints its message as one line and exits with ``exit_status``
(2, bad input, unless the error says otherwise)."""


class FlSimError(Exception):
    """Bad input from the user (config, data path, CLI flag). Message is one line."""

    exit_status = 2


class ConfigError(FlSimError):
    """A config file or override is invalid."""


class DataError(FlSimError):
    """A data file is missing, truncated or in the wrong format."""


class SnapshotError(FlSimError):
    """A snapshot is missing, or fails its checksum."""


class SnapshotWriteError(SnapshotError):
    """Snapshots could not be written (a full disk, a file size limit). Not bad input: the
    rounds already stored stay, and ``fl-sim run --resume`` continues once there is space."""

    exit_status = 1


class RunDirError(FlSimError):
    """A run directory holds what fl-sim does not write there: a path that leads out of it,
    a plan that is not fl-sim's."""
