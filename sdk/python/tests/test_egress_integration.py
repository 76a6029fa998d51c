"""Egress rules against a real server (skipped without NULLSPACE_TEST_API_URL).

The refused destination is 192.0.2.1 (TEST-NET-1, documentation only: routed nowhere). Refused by a
rule, a connection to it fails at once with a reset (curl exit 7 or 56) and is counted; without a rule
it is not counted (and hangs until curl's timeout).
"""

import contextlib
import io
import os
import re
import unittest

from nullspace import InvalidArgumentError, Sandbox
from _live import KEY, URL, needs_server

CURL = "curl -sS -o /dev/null --connect-timeout 5 http://192.0.2.1/; echo rc=$?"
REFUSED = ("rc=7", "rc=56")


@needs_server
class EgressTest(unittest.TestCase):
    def test_create_with_rules_then_update_network(self):
        s = Sandbox.create(api_url=URL, api_key=KEY, network={"deny_out": ["192.0.2.0/24"], "allow_out": []})
        self.addCleanup(s.kill)
        self.assertEqual(s.get_network(), {"allowOut": [], "denyOut": ["192.0.2.0/24"], "refusedConnections": 0})
        r = s.commands.run(CURL, timeout_ms=60_000)
        self.assertIn(r.stdout.strip(), REFUSED, r.stderr)
        self.assertGreaterEqual(s.get_network()["refusedConnections"], 1)

        net = s.update_network(allow_out=["*.Example.test", "10.0.0.0/8"])
        self.assertEqual(net["allowOut"], ["*.example.test", "10.0.0.0/8"])
        self.assertEqual(net["denyOut"], [])
        # the refusals of the earlier rules stay counted
        self.assertGreaterEqual(net["refusedConnections"], 1)
        # 192.0.2.1 is not allowed now either: still refused at once
        r = s.commands.run(CURL, timeout_ms=60_000)
        self.assertIn(r.stdout.strip(), REFUSED, r.stderr)
        counted = s.get_network()["refusedConnections"]
        self.assertGreater(counted, net["refusedConnections"])

        net = s.update_network()
        self.assertEqual((net["allowOut"], net["denyOut"]), ([], []))
        # no rule: not refused (not counted)
        s.commands.run(CURL, timeout_ms=60_000)
        self.assertEqual(s.get_network()["refusedConnections"], counted)

    def test_a_bad_rule_is_refused_with_its_code(self):
        with self.assertRaises(InvalidArgumentError) as ctx:
            Sandbox.create(api_url=URL, api_key=KEY, network={"deny_out": ["10.0.0.1/8"]})
        self.assertEqual(ctx.exception.code, "invalid_network_rule")

    def test_the_readme_example_runs_as_written(self):
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir, "README.md")
        with open(readme, encoding="utf-8") as f:
            blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "update_network" in b]
        self.assertEqual(len(blocks), 1)
        env = {"NULLSPACE_API_URL": URL, "NULLSPACE_API_KEY": KEY}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(blocks[0], "<README>", "exec"), {})
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.assertIn("'allowOut': ['*.github.com'], 'denyOut': ['gist.github.com'], 'refusedConnections': 0", out.getvalue())


if __name__ == "__main__":
    unittest.main()
