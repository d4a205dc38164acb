"""The key ceremony (``certmint-ca ceremony run CONFIG.toml``).

``config.py`` reads the one declarative input; ``steps.py`` plans and runs
it (``root``, ``intermediate``, ``cross-sign``, ``crl``); ``certs.py`` holds
the BR certificate and CRL shapes, ``lint.py`` the pkilint hooks every
signature passes, ``keys.py`` the file and PKCS#11 keys, ``audit.py`` the
JSON-lines audit log and ``issuers_out.py`` the issuers file ``serve`` reads.
See docs/ceremony.md.
"""
