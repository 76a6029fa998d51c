"""Template recipes against the scripted fake server (no nullspace server needed): the spec and
the context tar the server receives, the build's NDJSON stream as log lines, the done and error
events, errors before the stream, list/get/delete."""

import base64
import contextlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import threading
import unittest

from nullspace import (
    ConflictError,
    InvalidArgumentError,
    SandboxError,
    Template,
    TemplateBuildError,
    TemplateInfo,
    wait_for_command,
    wait_for_file,
    wait_for_port,
)

from _fakeserver import FakeServer, error_reply, json_reply, ndjson_reply

KEY = "fake-key"

VIEW = {
    "name": "my-node",
    "version": 2,
    "ref": "my-node:2",
    "cpuCount": 2,
    "memoryMiB": 1024,
    "diskSizeMiB": 8192,
    "createdAt": "2026-12-05T10:00:00.000Z",
    "from": "template base:1",
    "startCmd": "node server.js",
    "ready": {"port": 3000},
    "envs": {"NODE_ENV": "production"},
    "user": "user",
    "workdir": "/srv/app",
    "exposedPorts": [3000],
    "buildMs": 4200,
    "steps": 5,
    "compatible": True,
    "accel": "tcg",
    "cpuModel": "max",
}


def b64(data) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class TemplateTestCase(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer().__enter__()
        self.addCleanup(self.server.__exit__)
        self.conn = {"api_url": self.server.url, "api_key": KEY}

    def tmpdir(self) -> str:
        d = tempfile.mkdtemp(prefix="ns-template-test-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def write(self, path, content, mode=None):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        if mode is not None:
            os.chmod(path, mode)

    def serve_build(self, events):
        """Routes that take a context and answer the build with ``events``."""
        self.server.routes[("POST", "/v1/templates/contexts")] = lambda r: json_reply(201, {"contextId": "ctx_0123456789abcdef", "files": 1, "bytes": len(r.body), "sha256": "x"})
        self.server.routes[("POST", "/v1/templates")] = lambda r: ndjson_reply(events)

    def requests(self, method, path):
        return [r for r in self.server.requests if (r.method, r.path) == (method, path)]


class RecipeTest(TemplateTestCase):
    def test_builder_methods_become_steps(self):
        t = (
            Template()
            .from_template("base")
            .apt_install(["jq", "curl"])
            .apt_install("git")
            .run_cmd("npm ci")
            .run_cmd(["a", "b"])
            .set_envs({"NODE_ENV": "production"})
            .set_workdir("/srv/app")
            .set_user("user")
            .expose(3000)
            .set_start_cmd("node server.js", ready_cmd=wait_for_port(3000), timeout_ms=90000)
        )
        self.assertEqual(
            t.to_spec(),
            {
                "from": {"template": "base"},
                "steps": [
                    {"type": "apt", "packages": ["jq", "curl"]},
                    {"type": "apt", "packages": ["git"]},
                    {"type": "run", "cmd": "npm ci"},
                    {"type": "run", "cmd": "a && b"},
                    {"type": "env", "envs": {"NODE_ENV": "production"}},
                    {"type": "workdir", "path": "/srv/app"},
                    {"type": "user", "name": "user"},
                    {"type": "expose", "port": 3000},
                ],
                "start": {"cmd": "node server.js", "ready": {"port": 3000}, "timeoutMs": 90000},
            },
        )
        self.assertEqual(wait_for_command("curl -sf localhost:3000"), {"cmd": "curl -sf localhost:3000"})
        self.assertEqual(wait_for_file("/tmp/ready"), {"file": "/tmp/ready"})
        self.assertEqual(
            Template().from_image("registry.example:5000/app:1", username="u", password="p").to_spec(),
            {"from": {"image": "registry.example:5000/app:1", "auth": {"username": "u", "password": "p"}}, "steps": []},
        )

    def test_from_dockerfile_path_directory_or_text(self):
        d = self.tmpdir()
        self.write(os.path.join(d, "Dockerfile"), "FROM base\nRUN true\n")
        self.assertEqual(Template().from_dockerfile(os.path.join(d, "Dockerfile")).to_spec(), {"dockerfile": "FROM base\nRUN true\n", "steps": []})
        self.assertEqual(Template().from_dockerfile(d).to_spec()["dockerfile"], "FROM base\nRUN true\n")
        self.assertEqual(Template().from_dockerfile("FROM base").run_cmd("x").to_spec(), {"dockerfile": "FROM base", "steps": [{"type": "run", "cmd": "x"}]})

    def test_refusals_of_the_builder(self):
        with self.assertRaises(InvalidArgumentError):
            Template().from_template("base").from_image("debian")
        with self.assertRaisesRegex(InvalidArgumentError, "before adding steps"):
            Template().run_cmd("x").from_dockerfile("FROM base")
        with self.assertRaisesRegex(InvalidArgumentError, "does not exist"):
            Template().from_template("base").copy("/nonexistent/x", "/x")
        with self.assertRaisesRegex(InvalidArgumentError, "does not exist"):
            Template().from_dockerfile("/nonexistent/Dockerfile")
        with self.assertRaisesRegex(InvalidArgumentError, "both username and password"):
            Template().from_image("x", username="u")


class ContextTest(TemplateTestCase):
    def test_context_directory_dockerignore_and_recipe_copies(self):
        ctx = self.tmpdir()
        self.write(os.path.join(ctx, "Dockerfile"), "FROM base\nCOPY . /srv/app\n")
        self.write(os.path.join(ctx, ".dockerignore"), "# output\nnode_modules\n**/*.log\n/secret.txt\n!keep.log\n")
        self.write(os.path.join(ctx, "server.js"), "console.log(1)\n", 0o644)
        self.write(os.path.join(ctx, "run.sh"), "#!/bin/sh\n", 0o755)
        self.write(os.path.join(ctx, "secret.txt"), "no")
        self.write(os.path.join(ctx, "a.log"), "no")
        self.write(os.path.join(ctx, "keep.log"), "yes")
        self.write(os.path.join(ctx, "lib", "deep", "x.log"), "no")
        self.write(os.path.join(ctx, "lib", "util.js"), "u")
        self.write(os.path.join(ctx, "node_modules", "left", "index.js"), "no")
        long = "d" * 90 + "/" + "e" * 90 + "/" + "f" * 120 + ".txt"
        self.write(os.path.join(ctx, long), "long")
        self.write(os.path.join(ctx, "ünïcödé €.txt"), "utf8 name")
        os.symlink("server.js", os.path.join(ctx, "link.js"))
        local = self.tmpdir()
        self.write(os.path.join(local, "config.json"), '{"a":1}', 0o600)
        self.write(os.path.join(local, "assets", "logo.svg"), "<svg/>")

        self.serve_build([{"type": "done", "template": VIEW}])
        t = (
            Template()
            .from_dockerfile(os.path.join(ctx, "Dockerfile"))
            .copy(os.path.join(local, "config.json"), "/etc/app/", chown="user:user", mode=0o640)
            .copy(os.path.join(local, "assets"), "/srv/assets", mode="0755")
        )
        info = Template.build(t, name="my-node", cpu_count=2, memory_mib=1024, disk_size_mib=8192, no_cache=True, build_args={"V": "2"}, **self.conn)
        self.assertIsInstance(info, TemplateInfo)
        self.assertEqual((info.ref, info.from_, info.cpu_count, info.exposed_ports, info.created_at.isoformat()), ("my-node:2", "template base:1", 2, [3000], "2026-12-05T10:00:00+00:00"))
        self.assertEqual([(r.method, r.path) for r in self.server.requests], [("POST", "/v1/templates/contexts"), ("POST", "/v1/templates")])

        upload = self.requests("POST", "/v1/templates/contexts")[0]
        self.assertEqual(upload.headers["Content-Type"], "application/x-tar")
        self.assertTrue(upload.chunked)  # streamed from the temporary file, not one buffer
        self.assertEqual(
            self.requests("POST", "/v1/templates")[0].json(),
            {
                "name": "my-node",
                "spec": {
                    "dockerfile": "FROM base\nCOPY . /srv/app\n",
                    "steps": [
                        {"type": "copy", "src": ".nullspace/copy/0/config.json", "dest": "/etc/app/", "chown": "user:user", "mode": "0640"},
                        {"type": "copy", "src": ".nullspace/copy/1/assets", "dest": "/srv/assets", "mode": "0755"},
                    ],
                },
                "contextId": "ctx_0123456789abcdef",
                "buildArgs": {"V": "2"},
                "cpuCount": 2,
                "memoryMiB": 1024,
                "diskSizeMiB": 8192,
                "noCache": True,
            },
        )
        with tarfile.open(fileobj=io.BytesIO(upload.body)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            self.assertEqual(
                sorted(members),
                sorted(
                    [
                        ".dockerignore",
                        ".nullspace",
                        ".nullspace/copy",
                        ".nullspace/copy/0",
                        ".nullspace/copy/0/config.json",
                        ".nullspace/copy/1",
                        ".nullspace/copy/1/assets",
                        ".nullspace/copy/1/assets/logo.svg",
                        "Dockerfile",
                        "d" * 90,
                        "d" * 90 + "/" + "e" * 90,
                        long,
                        "keep.log",
                        "lib",
                        "lib/deep",
                        "lib/util.js",
                        "link.js",
                        "run.sh",
                        "server.js",
                        "ünïcödé €.txt",
                    ]
                ),
            )
            self.assertEqual(tar.extractfile(members[long]).read(), b"long")
            self.assertEqual(tar.extractfile(members["ünïcödé €.txt"]).read(), "utf8 name".encode())
            self.assertEqual(tar.extractfile(members[".nullspace/copy/1/assets/logo.svg"]).read(), b"<svg/>")
            self.assertTrue(members["link.js"].issym())
            self.assertEqual(members["link.js"].linkname, "server.js")
            self.assertEqual(members["run.sh"].mode & 0o7777, 0o755)
            self.assertEqual(members[".nullspace/copy/0/config.json"].mode & 0o7777, 0o600)
            self.assertTrue(members[".nullspace"].isdir())
            self.assertEqual({(m.uid, m.gid, m.uname, m.gname) for m in members.values()}, {(0, 0, "root", "root")})

    def test_context_option_and_no_context_without_local_files(self):
        df_dir, ctx = self.tmpdir(), self.tmpdir()
        self.write(os.path.join(df_dir, "Dockerfile"), "FROM base\nCOPY app.js /srv/\n")
        self.write(os.path.join(df_dir, "not-sent.txt"), "x")
        self.write(os.path.join(ctx, "app.js"), "app")
        self.serve_build([{"type": "done", "template": VIEW}])
        Template.build(Template().from_dockerfile(os.path.join(df_dir, "Dockerfile")), name="a", context=ctx, **self.conn)
        with tarfile.open(fileobj=io.BytesIO(self.requests("POST", "/v1/templates/contexts")[0].body)) as tar:
            self.assertEqual(tar.getnames(), ["app.js"])

        self.server.requests.clear()
        Template.build(Template().from_template("base").run_cmd("true"), name="a", **self.conn)
        self.assertEqual([(r.method, r.path) for r in self.server.requests], [("POST", "/v1/templates")])
        self.assertEqual(self.server.requests[0].json(), {"name": "a", "spec": {"from": {"template": "base"}, "steps": [{"type": "run", "cmd": "true"}]}})

    def test_from_archive(self):
        d = self.tmpdir()
        self.write(os.path.join(d, "app.tar"), "not really a tar")
        self.serve_build([{"type": "done", "template": VIEW}])
        Template.build(Template().from_archive(os.path.join(d, "app.tar")), name="a", **self.conn)
        self.assertEqual(self.requests("POST", "/v1/templates")[0].json()["spec"], {"from": {"archive": "ctx:.nullspace/from/0/app.tar"}, "steps": []})
        with tarfile.open(fileobj=io.BytesIO(self.requests("POST", "/v1/templates/contexts")[0].body)) as tar:
            self.assertEqual(tar.extractfile(".nullspace/from/0/app.tar").read(), b"not really a tar")

    def test_local_file_gone_and_bad_contexts(self):
        d = self.tmpdir()
        self.write(os.path.join(d, "x.txt"), "x")
        t = Template().from_template("base").copy(os.path.join(d, "x.txt"), "/x")
        os.remove(os.path.join(d, "x.txt"))
        self.serve_build([{"type": "done", "template": VIEW}])
        with self.assertRaises(SandboxError) as cm:
            Template.build(t, name="a", **self.conn)
        self.assertEqual(cm.exception.code, "bad_request")
        self.assertIn("x.txt", cm.exception.message)
        self.write(os.path.join(d, "f"), "x")
        os.mkdir(os.path.join(d, ".nullspace"))
        with self.assertRaisesRegex(InvalidArgumentError, "is not a directory"):
            Template.build(Template().from_template("base"), name="a", context=os.path.join(d, "f"), **self.conn)
        with self.assertRaisesRegex(InvalidArgumentError, "has a .nullspace entry"):
            Template.build(Template().from_template("base").copy(os.path.join(d, "f"), "/f"), name="a", context=d, **self.conn)
        self.assertEqual(self.server.requests, [])


class BuildStreamTest(TemplateTestCase):
    def test_log_lines_as_they_come(self):
        lines = []
        got_first = threading.Event()
        euro = "€".encode()
        waited = []

        def events():
            yield {"type": "info", "message": "base is local"}
            yield {"type": "step", "step": 1, "of": 2, "instruction": "RUN npm ci", "cached": False}
            yield {"type": "log", "step": 1, "stream": "stdout", "data": b64(b"added 3 packages\npart" + euro[:1])}
            # the server goes on only once the client has the first line
            waited.append(got_first.wait(10))
            yield {"type": "log", "step": 1, "stream": "stderr", "data": b64("warn: x\r\n")}
            yield {"type": "log", "step": 1, "stream": "stdout", "data": b64(euro[1:] + b"ial\n")}
            yield {"type": "log", "step": 1, "stream": "stdout", "data": b64("no newline at the end")}
            yield {"type": "stepDone", "step": 1, "ms": 1234}
            yield {"type": "step", "step": 2, "of": 2, "instruction": "COPY app /srv/app", "cached": True}
            yield {"type": "stepDone", "step": 2, "ms": 5}
            yield {"type": "some-future-event"}
            yield {"type": "done", "template": VIEW}

        self.serve_build(events())

        def on_log(line):
            lines.append(line)
            if line == "added 3 packages":
                got_first.set()

        info = Template.build(Template().from_template("base"), name="my-node", on_log=on_log, **self.conn)
        self.assertEqual(waited, [True])
        self.assertEqual(
            lines,
            [
                "base is local",
                "Step 1/2: RUN npm ci",
                "added 3 packages",
                "warn: x",
                "part€ial",
                "no newline at the end",
                "Step 1/2 done (1.2 s)",
                "Step 2/2: COPY app /srv/app (cached)",
                "Step 2/2 done (0.0 s)",
            ],
        )
        self.assertEqual(info.ref, "my-node:2")

    def test_error_event(self):
        lines = []
        self.serve_build(
            [
                {"type": "step", "step": 3, "of": 7, "instruction": "RUN npm test"},
                {"type": "log", "step": 3, "stream": "stderr", "data": b64("1 test failed\n")},
                {"type": "error", "code": "template_build_failed", "message": "step 3/7 exited with code 2", "step": 3, "exitCode": 2, "output": "1 test failed\n"},
            ]
        )
        with self.assertRaises(TemplateBuildError) as cm:
            Template.build(Template().from_template("base"), name="a", on_log=lines.append, **self.conn)
        e = cm.exception
        self.assertIsInstance(e, SandboxError)
        self.assertEqual((e.code, e.message, e.step, e.exit_code, e.output), ("template_build_failed", "step 3/7 exited with code 2", 3, 2, "1 test failed\n"))
        self.assertEqual(lines, ["Step 3/7: RUN npm test", "1 test failed"])

        self.serve_build([{"type": "error", "code": "template_ready_timeout", "message": "port 3000 not open", "output": "listening on 3001\n"}])
        with self.assertRaises(TemplateBuildError) as cm:
            Template.build(Template().from_template("base"), name="a", **self.conn)
        self.assertEqual((cm.exception.code, cm.exception.step, cm.exception.exit_code, cm.exception.output), ("template_ready_timeout", None, None, "listening on 3001\n"))

    def test_stream_without_result(self):
        self.serve_build([{"type": "step", "step": 1, "of": 1, "instruction": "RUN x"}])
        with self.assertRaises(SandboxError) as cm:
            Template.build(Template().from_template("base"), name="a", **self.conn)
        self.assertEqual(cm.exception.code, "stream_ended")

    def test_errors_before_the_stream(self):
        self.server.routes[("POST", "/v1/templates")] = lambda r: error_reply(400, "invalid_dockerfile", "line 2: VOLUME is not supported", {"line": 2, "instruction": "VOLUME"})
        with self.assertRaises(InvalidArgumentError) as cm:
            Template.build(Template().from_dockerfile("FROM base\nVOLUME /x"), name="a", **self.conn)
        self.assertNotIsInstance(cm.exception, TemplateBuildError)
        self.assertEqual((cm.exception.code, cm.exception.status, cm.exception.details), ("invalid_dockerfile", 400, {"line": 2, "instruction": "VOLUME"}))

        self.server.routes[("POST", "/v1/templates")] = lambda r: error_reply(409, "template_build_in_progress", "being built")
        with self.assertRaises(ConflictError):
            Template.build(Template().from_template("base"), name="my-node", **self.conn)

        d = self.tmpdir()
        self.write(os.path.join(d, "f"), "x")
        self.server.requests.clear()
        self.server.routes[("POST", "/v1/templates/contexts")] = lambda r: error_reply(400, "invalid_context", "a device node")
        with self.assertRaises(InvalidArgumentError) as cm:
            Template.build(Template().from_template("base").copy(os.path.join(d, "f"), "/f"), name="a", **self.conn)
        self.assertEqual(cm.exception.code, "invalid_context")
        self.assertEqual([(r.method, r.path) for r in self.server.requests], [("POST", "/v1/templates/contexts")])


class ListGetDeleteTest(TemplateTestCase):
    def test_list_get_delete(self):
        self.server.routes[("GET", "/v1/templates")] = lambda r: json_reply(200, {"templates": [VIEW]})
        self.server.routes[("GET", "/v1/templates/my-node%3A2")] = lambda r: json_reply(200, VIEW)
        self.server.routes[("DELETE", "/v1/templates/my-node")] = lambda r: (204, {}, b"")
        self.server.routes[("DELETE", "/v1/templates/gone")] = lambda r: error_reply(404, "template_not_found", "no template gone")
        self.assertEqual([t.ref for t in Template.list(**self.conn)], ["my-node:2"])
        self.assertEqual(Template.get("my-node:2", **self.conn).envs, {"NODE_ENV": "production"})
        self.assertTrue(Template.delete("my-node", **self.conn))
        self.assertFalse(Template.delete("gone", **self.conn))


class DocumentationTest(TemplateTestCase):
    def test_the_readme_examples_run_as_written(self):
        """The Python template examples of both READMEs, run verbatim against the fake server."""
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
        blocks = []
        for readme in (os.path.join(root, "README.md"), os.path.join(root, os.pardir, os.pardir, "README.md")):
            with open(readme, encoding="utf-8") as f:
                blocks += [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "Template" in b]
        self.assertEqual(len(blocks), 2)
        work = self.tmpdir()
        self.write(os.path.join(work, "app", "server.js"), "require('http')")
        self.serve_build([{"type": "step", "step": 1, "of": 1, "instruction": "RUN npm ci"}, {"type": "done", "template": VIEW}])
        sandbox = {"sandboxId": "sbx_fake000000000001", "template": "my-node", "snapshotId": None, "state": "running", "metadata": {}, "memoryMiB": 1024, "vcpus": 2}
        self.server.routes[("POST", "/v1/sandboxes")] = lambda r: json_reply(201, sandbox)
        env = {"NULLSPACE_API_URL": self.server.url, "NULLSPACE_API_KEY": KEY}
        old_env = {k: os.environ.get(k) for k in env}
        old_cwd = os.getcwd()
        os.environ.update(env)
        os.chdir(work)
        try:
            for block in blocks:
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(block, "<README>", "exec"), {})
                self.assertIn("Step 1/1: RUN npm ci", out.getvalue())
        finally:
            os.chdir(old_cwd)
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        builds = self.requests("POST", "/v1/templates")
        self.assertEqual(len(builds), 2)
        for b in builds:
            spec = b.json()["spec"]
            self.assertEqual(spec["from"], {"template": "base"})
            self.assertEqual(spec["start"], {"cmd": "node server.js", "ready": {"port": 3000}})
            copies = [(st["src"], st["dest"]) for st in spec["steps"] if st["type"] == "copy"]
            self.assertEqual(copies, [(".nullspace/copy/0/app", "/srv/app")])


if __name__ == "__main__":
    unittest.main()
