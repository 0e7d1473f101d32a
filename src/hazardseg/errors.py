"""Exceptions for expected user errors (bad paths, bad values, bad files)."""


class HazardsegError(Exception):
    """An expected user error; the CLI prints its message on one line and exits non-zero."""


class DataError(HazardsegError):
    """A dataset tree, image or annotation is missing or malformed."""


class ConfigError(HazardsegError):
    """A configuration key or value is unknown or invalid."""


class CheckpointError(HazardsegError):
    """A checkpoint is missing, corrupt or does not match the requested model."""


class MissingDependencyError(HazardsegError):
    """An optional package is not installed."""
