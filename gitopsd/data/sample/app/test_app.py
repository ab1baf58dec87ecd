"""The sample app's own tests (stdlib unittest): what the built-in CI's `test` step runs.

Run them with: python3 -m unittest discover -s app -v
"""
from __future__ import annotations

import json
import tempfile
import threading
import unittest
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import app
import build


class SettingsTest(unittest.TestCase):
    def test_the_release_settings_are_valid_and_healthy(self):
        settings, problem = app.read_settings("")   # the defaults every environment starts from
        self.assertIsNone(problem, f"this release's settings.json makes the app unhealthy: {problem}")
        self.assertIsInstance(settings.get("greeting"), str)

    def test_an_environment_layer_can_make_a_release_unhealthy(self):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "settings.json").write_text('{"greeting": "hi"}')
            Path(folder, "settings.production.json").write_text('{"healthy": false}')
            with mock.patch.object(app, "HERE", Path(folder)):
                self.assertIsNone(app.read_settings("qa")[1])
                self.assertEqual(app.read_settings("production")[1], "settings.production.json says healthy: false")


    def test_the_hosts_config_file_overrides_the_release_and_a_missing_one_changes_nothing(self):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "settings.json").write_text('{"greeting": "hi", "healthy": true}')
            Path(folder, "app.conf").write_text('{"greeting": "hello from this host"}')
            with mock.patch.object(app, "HERE", Path(folder)):
                self.assertEqual(app.read_settings("qa", Path(folder, "app.conf"))[0]["greeting"], "hello from this host")
                self.assertEqual(app.read_settings("qa", Path(folder, "none.conf")), ({"greeting": "hi", "healthy": True},
                                                                                     None))


class HealthTest(unittest.TestCase):
    def get(self, problem):
        server = ThreadingHTTPServer(("127.0.0.1", 0), app.make_handler({"commit": "abc"}, {"greeting": "hi"}, problem))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/health"
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return resp.status, json.load(resp)
            except urllib.error.HTTPError as exc:
                return exc.code, json.load(exc)
        finally:
            server.shutdown()
            server.server_close()

    def test_health_reports_the_commit(self):
        self.assertEqual(self.get(None), (200, {"status": "ok", "commit": "abc", "env": "unknown", "host": "unknown"}))

    def test_an_unhealthy_release_answers_503_with_the_reason(self):
        code, body = self.get("settings.json says healthy: false")
        self.assertEqual((code, body["status"], body["reason"]), (503, "failing", "settings.json says healthy: false"))


class BuildTest(unittest.TestCase):
    def test_one_tree_builds_one_sha256(self):
        with tempfile.TemporaryDirectory() as folder:
            first = build.build(Path(app.__file__).parent, Path(folder, "a.tar.gz"))
            second = build.build(Path(app.__file__).parent, Path(folder, "b.tar.gz"))
        self.assertEqual(first, second)


if __name__ == "__main__":
    unittest.main()
