"""Template builds against a real server (skipped without NULLSPACE_TEST_API_URL): a recipe with a
local file and a start command whose port is open in every sandbox, list/get/delete, a failing step."""

import os
import secrets
import shutil
import tempfile
import unittest

from nullspace import (
    ConflictError,
    InvalidArgumentError,
    Sandbox,
    Template,
    TemplateBuildError,
    TemplateNotFoundError,
    wait_for_command,
    wait_for_port,
)
from _live import CONN, needs_server


@needs_server
class TemplateBuildTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ns-py-tpl-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def name(self) -> str:
        n = "py-" + secrets.token_hex(4)
        self.addCleanup(Template.delete, n, **CONN)
        return n

    def test_recipe_with_a_running_service(self):
        site = os.path.join(self.dir, "site")
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write("hello from python\n")
        name = self.name()
        lines: list[str] = []
        template = (
            Template()
            .from_template("base")
            .copy(site, "/srv/site", chown="user:user")
            .set_workdir("/srv/site")
            .run_cmd("echo built > built.txt")
            .set_user("user")
            .set_envs({"SITE": "py"})
            .set_start_cmd("python3 -m http.server 8000", ready_cmd=wait_for_port(8000))
        )
        info = Template.build(template, name=name, memory_mib=512, on_log=lines.append, **CONN)
        self.assertEqual((info.name, info.version, info.start_cmd, info.ready), (name, 1, "python3 -m http.server 8000", {"port": 8000}))
        self.assertEqual((info.user, info.workdir, info.envs.get("SITE")), ("user", "/srv/site", "py"))
        self.assertTrue(any(line.startswith("Step 3/5: RUN echo built") for line in lines), lines)
        self.assertEqual(Template.get(name, **CONN).ref, f"{name}:1")
        self.assertIn(name, [t.name for t in Template.list(**CONN)])

        sbx = Sandbox.create(template=name, **CONN)
        self.addCleanup(sbx.kill)
        # the service of the snapshot answers the first request
        r = sbx.commands.run("curl -sf -m 5 http://127.0.0.1:8000/index.html; id -un; pwd; echo $SITE; cat built.txt")
        self.assertEqual(r.stdout, "hello from python\nuser\n/srv/site\npy\nbuilt\n")

        # deleting the template leaves its sandbox running
        self.assertTrue(Template.delete(name, **CONN))
        with self.assertRaises(TemplateNotFoundError):
            Template.get(name, **CONN)
        self.assertFalse(Template.delete(name, **CONN))
        self.assertEqual(sbx.commands.run("cat built.txt").stdout, "built\n")

    def test_a_failing_step_and_refusals(self):
        name = self.name()
        with self.assertRaises(TemplateBuildError) as ctx:
            Template.build(Template().from_template("base").run_cmd("echo nearly; exit 4"), name=name, **CONN)
        err = ctx.exception
        self.assertEqual((err.code, err.step, err.exit_code), ("template_build_failed", 1, 4))
        self.assertIn("nearly", err.output)
        with self.assertRaises(TemplateNotFoundError):
            Template.get(name, **CONN)
        # a ready check that never passes
        with self.assertRaises(TemplateBuildError) as ctx:
            Template.build(
                Template().from_template("base").set_start_cmd("sleep 600", ready_cmd=wait_for_command("false"), timeout_ms=2000),
                name=name,
                **CONN,
            )
        self.assertEqual(ctx.exception.code, "template_ready_timeout")
        # refused before building: an unknown Dockerfile instruction (its line), the name base
        with self.assertRaises(InvalidArgumentError) as bad:
            Template.build(Template().from_dockerfile("FROM base\nRUN true\nVOLUME /data\n"), name=name, **CONN)
        self.assertEqual(bad.exception.code, "invalid_dockerfile")
        self.assertIn("line 3", str(bad.exception))
        with self.assertRaises(ConflictError) as exists:
            Template.build(Template().from_template("base"), name="base", **CONN)
        self.assertEqual(exists.exception.code, "template_exists")


if __name__ == "__main__":
    unittest.main()
