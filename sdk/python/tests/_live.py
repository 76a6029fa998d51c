"""The real server the integration tests run against: NULLSPACE_TEST_API_URL (and _KEY)."""

import os
import unittest

URL = os.environ.get("NULLSPACE_TEST_API_URL")
KEY = os.environ.get("NULLSPACE_TEST_API_KEY")
CONN = {"api_url": URL, "api_key": KEY}

# a test class that needs the server is skipped without one
needs_server = unittest.skipUnless(URL, "NULLSPACE_TEST_API_URL is not set: no server to test against")
