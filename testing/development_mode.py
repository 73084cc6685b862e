"""Development mode for the test process, before Django's settings are read.

DEBUG is off unless the environment turns it on (portal/settings.py), and with DEBUG off
the settings refuse the development secrets the suites run with. pytest-django reads the
settings before any conftest.py is imported, so this is a plugin pytest loads first
(pyproject.toml: `-p testing.development_mode`). It only fills in DEBUG when unset: the
servers the production-profile tests start get DEBUG=false and real-looking secrets
explicitly (testing/web_server.py), and DEBUG=false pytest ... still means what it says.
"""

import os

os.environ.setdefault("DEBUG", "true")
