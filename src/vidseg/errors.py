"""Errors meant for users: the CLI prints their message as one line, without a traceback.

Raise these (never a bare ``ValueError`` from deep inside) when input from a user is wrong, and
name the file, key or value at fault in the message.
"""

from __future__ import annotations


class VidsegError(Exception):
    """Base class of every error whose message alone tells the user what to fix."""


class DataError(VidsegError):
    """A dataset on disk is missing, malformed or inconsistent."""


class ConfigError(VidsegError):
    """A configuration value or command-line option is invalid."""
