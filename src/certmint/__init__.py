"""certmint: a free, automated certificate authority and its agent (ACME, RFC 8555)."""

__version__ = "0.1.0"
