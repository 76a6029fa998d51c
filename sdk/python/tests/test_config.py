"""ConnectionConfig: arguments, environment, the local server's key file (no server needed)."""

import os
import tempfile
import unittest
from unittest import mock

from nullspace import ConnectionConfig, SandboxError
from nullspace.connection import DEFAULT_API_URL, DEFAULT_REQUEST_TIMEOUT, local_key_file

ENV_KEYS = ("NULLSPACE_API_URL", "NULLSPACE_API_KEY", "NULLSPACE_DATA_DIR")


class ConfigTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        # an empty data dir: no key file unless a test writes one
        env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
        env["NULLSPACE_DATA_DIR"] = self.tmp.name
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def write_key(self, text):
        with open(os.path.join(self.tmp.name, "api-key"), "w") as f:
            f.write(text)

    def test_defaults_with_key_file(self):
        self.write_key("  from-file-key\n")
        c = ConnectionConfig()
        self.assertEqual(c.api_url, DEFAULT_API_URL)
        self.assertEqual(c.api_key, "from-file-key")
        self.assertEqual(c.request_timeout, DEFAULT_REQUEST_TIMEOUT)
        self.assertEqual(DEFAULT_API_URL, "http://127.0.0.1:7070")
        self.assertEqual(DEFAULT_REQUEST_TIMEOUT, 120)
        self.assertEqual(local_key_file(), os.path.join(self.tmp.name, "api-key"))

    def test_default_data_dir(self):
        del os.environ["NULLSPACE_DATA_DIR"]
        self.assertEqual(local_key_file(), "/var/lib/nullspace/data/api-key")

    def test_env_beats_key_file(self):
        self.write_key("from-file-key")
        os.environ["NULLSPACE_API_KEY"] = "from-env"
        os.environ["NULLSPACE_API_URL"] = "http://example.test:9000/"
        c = ConnectionConfig()
        self.assertEqual(c.api_key, "from-env")
        self.assertEqual(c.api_url, "http://example.test:9000")

    def test_arguments_beat_env(self):
        os.environ["NULLSPACE_API_KEY"] = "from-env"
        os.environ["NULLSPACE_API_URL"] = "http://env.test:1"
        c = ConnectionConfig(api_url="https://arg.test/base///", api_key="from-arg", request_timeout=5)
        self.assertEqual(c.api_key, "from-arg")
        self.assertEqual(c.api_url, "https://arg.test/base")
        self.assertEqual(c.request_timeout, 5.0)

    def test_missing_key(self):
        with self.assertRaises(SandboxError) as cm:
            ConnectionConfig()
        self.assertEqual(cm.exception.code, "missing_api_key")
        self.assertIn("NULLSPACE_API_KEY", str(cm.exception))
        self.assertIn(os.path.join(self.tmp.name, "api-key"), str(cm.exception))

    def test_blank_key_file_is_missing(self):
        self.write_key(" \n\n")
        with self.assertRaises(SandboxError) as cm:
            ConnectionConfig()
        self.assertEqual(cm.exception.code, "missing_api_key")

    def test_invalid_url_and_timeout(self):
        with self.assertRaises(SandboxError) as cm:
            ConnectionConfig(api_url="ftp://x", api_key="k")
        self.assertEqual(cm.exception.code, "invalid_api_url")
        with self.assertRaises(SandboxError):
            ConnectionConfig(api_key="k", request_timeout=0)


if __name__ == "__main__":
    unittest.main()
