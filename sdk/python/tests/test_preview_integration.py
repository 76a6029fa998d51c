"""Preview URLs against a real server (skipped without NULLSPACE_TEST_API_URL): a server in the
guest reached by its preview host, with the traffic token and with a signed URL."""

import http.client
import json
import time
import unittest
from urllib.parse import urlsplit

from nullspace import Sandbox
from _live import CONN, URL, needs_server


def get(host: str, path: str, headers: dict) -> tuple:
    """A request to the server's address with a preview Host header: (status, parsed JSON body)."""
    u = urlsplit(URL)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        c.request("GET", path, headers={"Host": host, **headers})
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if body else None
    finally:
        c.close()


@needs_server
class PreviewTest(unittest.TestCase):
    def test_host_token_and_signed_url(self):
        sbx = Sandbox.create(template="base", network={"allow_public_traffic": False}, **CONN)
        self.addCleanup(sbx.kill)
        self.assertEqual(sbx.get_info().traffic_access_token, sbx.traffic_access_token)
        self.assertFalse(sbx.get_info().allow_public_traffic)
        sbx.commands.run("mkdir -p /workspace/www && echo '{\"from\": \"guest\"}' > /workspace/www/hi.json")
        sbx.commands.run("cd /workspace/www && python3 -m http.server 8080 --bind 127.0.0.1", background=True, timeout_ms=0)
        sbx.commands.run("for i in $(seq 300); do (echo > /dev/tcp/127.0.0.1/8080) 2>/dev/null && exit 0; sleep 0.1; done; exit 1", timeout_ms=60_000)
        host = sbx.get_host(8080)
        self.assertTrue(host.startswith(f"8080-{sbx.sandbox_id}."))
        status, body = get(host, "/hi.json", {})
        self.assertEqual(status, 401)
        self.assertEqual(body["error"]["code"], "traffic_token_missing")
        status, body = get(host, "/hi.json", {"X-Nullspace-Traffic-Token": "not-the-token"})
        self.assertEqual(status, 403)
        self.assertEqual(body["error"]["code"], "traffic_token_invalid")
        status, body = get(host, "/hi.json", {"X-Nullspace-Traffic-Token": sbx.traffic_access_token})
        self.assertEqual((status, body), (200, {"from": "guest"}))
        # a signed URL (made by the SDK from the token) opens it without the header
        signed = urlsplit(sbx.get_signed_url(8080, expires_in_s=300, path="/hi.json"))
        self.assertEqual(signed.netloc, host)
        self.assertIn(f"expires={int(time.time()) + 300}"[:-1], signed.query)
        status, body = get(host, f"{signed.path}?{signed.query}", {})
        self.assertEqual((status, body), (200, {"from": "guest"}))
        with self.assertRaises(ValueError):
            sbx.get_signed_url(0)

    def test_public_traffic_and_auto_resume_flags(self):
        sbx = Sandbox.create(template="base", network={"allow_public_traffic": True}, lifecycle={"on_timeout": "hibernate", "auto_resume": True}, **CONN)
        self.addCleanup(sbx.kill)
        info = sbx.get_info()
        self.assertTrue(info.allow_public_traffic)
        self.assertTrue(info.auto_resume)
        self.assertEqual(info.on_timeout, "hibernate")
        # nothing listens yet: 502 port_not_open, without a token (public)
        status, body = get(sbx.get_host(9), "/", {})
        self.assertEqual(status, 502)
        self.assertEqual(body["error"]["code"], "port_not_open")


if __name__ == "__main__":
    unittest.main()
