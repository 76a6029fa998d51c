"""error_from_response: the one code/status -> class map (no server needed)."""

import builtins
import unittest

import nullspace
from nullspace import errors
from nullspace.errors import error_from_response


def body(code, message="boom", details=None):
    e = {"code": code, "message": message}
    if details is not None:
        e["details"] = details
    return {"error": e}


class ErrorMappingTest(unittest.TestCase):
    def test_code_wins_over_status(self):
        cases = {
            "sandbox_not_found": errors.SandboxNotFoundError,
            "template_not_found": errors.TemplateNotFoundError,
            "file_not_found": errors.FileNotFoundError,
            "process_not_found": errors.ProcessNotFoundError,
            "snapshot_not_found": errors.SnapshotNotFoundError,
            "sandbox_not_running": errors.SandboxNotRunningError,
        }
        for code, cls in cases.items():
            with self.subTest(code=code):
                # even with an unexpected status, the code decides
                err = error_from_response(500, body(code))
                self.assertIs(type(err), cls)
                self.assertEqual(err.code, code)
                self.assertEqual(err.status, 500)

    def test_status_classes(self):
        cases = {
            400: errors.InvalidArgumentError,
            401: errors.AuthenticationError,
            403: errors.PermissionDeniedError,
            404: errors.NotFoundError,
            409: errors.ConflictError,
            413: errors.PayloadTooLargeError,
            429: errors.RateLimitError,
            503: errors.ServiceUnavailableError,
            507: errors.NotEnoughSpaceError,
            500: errors.SandboxError,
            418: errors.SandboxError,
        }
        for status, cls in cases.items():
            with self.subTest(status=status):
                err = error_from_response(status, body("some_code", "msg", {"field": "x"}))
                self.assertIs(type(err), cls)
                self.assertEqual(err.code, "some_code")
                self.assertEqual(err.message, "msg")
                self.assertEqual(str(err), "msg")
                self.assertEqual(err.details, {"field": "x"})

    def test_server_codes_of_the_api(self):
        # a few real codes of the server's status map
        self.assertIsInstance(error_from_response(401, body("unauthorized")), errors.AuthenticationError)
        self.assertIsInstance(error_from_response(400, body("validation_failed")), errors.InvalidArgumentError)
        self.assertIsInstance(error_from_response(409, body("process_not_running")), errors.ConflictError)
        self.assertIsInstance(error_from_response(404, body("route_not_found")), errors.NotFoundError)
        self.assertIsInstance(error_from_response(503, body("agent_unavailable")), errors.ServiceUnavailableError)
        self.assertIsInstance(error_from_response(507, body("no_space")), errors.NotEnoughSpaceError)

    def test_hierarchy(self):
        err = error_from_response(404, body("file_not_found"))
        self.assertIsInstance(err, errors.NotFoundError)
        self.assertIsInstance(err, errors.SandboxError)
        self.assertIsInstance(err, Exception)
        # the SDK's FileNotFoundError is not the built-in one (documented shadowing)
        self.assertNotIsInstance(err, builtins.FileNotFoundError)
        self.assertIsInstance(error_from_response(409, body("sandbox_not_running")), errors.ConflictError)

    def test_body_without_error_object(self):
        for b in (None, "not json", {"message": "x"}, {"error": "str"}, {"error": {}}, []):
            with self.subTest(body=b):
                err = error_from_response(502, b)
                self.assertIs(type(err), errors.SandboxError)
                self.assertEqual(err.code, "http_502")
                self.assertEqual(err.message, "HTTP 502")
                self.assertEqual(err.details, {})
        self.assertIs(type(error_from_response(404, None)), errors.NotFoundError)

    def test_defaults_and_timeout_result(self):
        e = errors.SandboxError("x")
        self.assertEqual((e.code, e.status, e.details), ("sandbox_error", None, {}))
        t = errors.TimeoutError("late", code="command_timeout", result=42)
        self.assertEqual(t.result, 42)
        self.assertIsNone(errors.TimeoutError("late").result)
        self.assertIn("command_timeout", repr(t))

    def test_public_exports(self):
        for name in nullspace.__all__:
            self.assertTrue(hasattr(nullspace, name), name)
        self.assertIs(nullspace.FileNotFoundError, errors.FileNotFoundError)
        self.assertIs(nullspace.TimeoutError, errors.TimeoutError)


if __name__ == "__main__":
    unittest.main()
