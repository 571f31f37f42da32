"""sipqualify: Asterisk-exact SIP qualify as a standalone, observable service."""

__version__ = "0.1.0"
