"""_engine.LocalEngine against a fake engine on a unix socket: the requests it sends, what it returns, its errors,
and the SDK client it hands every other call to. Its answers against a real engine, beside the SDK's, are checked
in tests/integration/test_restore_modules.py."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import time

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _client, _engine


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeEngine:
    """Answers from ``routes``: (method, path with query) -> (status, body bytes or object, chunked)."""

    def __init__(self, path):
        self.path = path
        self.routes = {}
        self.seen = []  # (method, path, body or None)
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                engine.seen.append((self.command, self.path, json.loads(body) if body else None))
                status, payload, chunked = engine.routes.get(
                    (self.command, self.path), (404, {"message": "no route"}, 0)
                )
                if status is None:  # hang: the client's timeout ends it
                    time.sleep(2)
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Connection", "close")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(data), 7):
                        piece = data[start : start + 7]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self.server = _Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def route(self, method, path, payload, status=200, chunked=False):
        self.routes[(method, path)] = (status, payload, chunked)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(tmp_path):
    engine = FakeEngine(str(tmp_path / "docker.sock"))
    engine.route("GET", "/version", {"ApiVersion": "1.41", "Version": "20.10.24"})
    yield engine
    engine.close()


def local(fake, version="auto", timeout=5, sdk=None):
    made = []

    def make(api_version):
        made.append(api_version)
        return sdk

    return _engine.LocalEngine(fake.path, version, timeout, make), made


def test_the_api_version_is_the_engines_and_every_call_is_under_it(fake):
    fake.route("GET", "/v1.41/_ping", b"OK")
    fake.route("GET", "/v1.41/volumes/data", {"Name": "data", "Mountpoint": "/var/lib/docker/volumes/data/_data"})
    engine, _made = local(fake)
    assert engine.ping() is True
    assert engine.inspect_volume("data")["Mountpoint"] == "/var/lib/docker/volumes/data/_data"
    assert [(m, p) for m, p, _b in fake.seen] == [
        ("GET", "/version"),
        ("GET", "/v1.41/_ping"),
        ("GET", "/v1.41/volumes/data"),
    ]
    assert engine.api_version == "1.41"
    assert engine.base_url in ("http+docker://localhost",)  # what the SDK calls a unix-socket engine


def test_a_given_api_version_is_spoken_without_asking(fake):
    fake.route("GET", "/v1.40/info", {"Name": "host1"}, chunked=True)
    engine, _made = local(fake, version="1.40")
    assert engine.info() == {"Name": "host1"}  # a chunked answer, as /info's is
    assert [p for _m, p, _b in fake.seen] == ["/v1.40/info"]


def test_create_volume_sends_what_the_sdk_sends(fake):
    fake.route("POST", "/v1.41/volumes/create", {"Name": "v"}, status=201)
    engine, _made = local(fake)
    assert engine.create_volume(name="v", driver="local", driver_opts=None, labels={"a": "b"}) == {"Name": "v"}
    engine.create_volume(name="v", driver="local")
    bodies = [b for m, _p, b in fake.seen if m == "POST"]
    assert bodies == [
        {"Name": "v", "Driver": "local", "DriverOpts": None, "Labels": {"a": "b"}},
        {"Name": "v", "Driver": "local", "DriverOpts": None},
    ]
    with pytest.raises(TypeError, match="driver_opts must be a dictionary"):
        engine.create_volume(name="v", driver_opts=["type=nfs"])


def test_remove_volume_and_image_lookups(fake):
    fake.route("DELETE", "/v1.41/volumes/v", b"", status=204)
    fake.route("DELETE", "/v1.41/volumes/v?force=True", b"", status=204)
    fake.route("GET", "/v1.41/images/registry.example:5000/app:1.0/json", {"Id": "sha256:aa"})
    fake.route("GET", "/v1.41/images/a%20b/json", {"Id": "sha256:bb"})
    fake.route("GET", "/v1.41/images/json?only_ids=0&all=0", [{"Id": "sha256:aa", "Size": 5}])
    fake.route("GET", "/v1.41/images/json?only_ids=0&all=1", [])
    engine, _made = local(fake)
    assert engine.remove_volume("v") is None
    assert engine.remove_volume("v", force=True) is None
    assert engine.inspect_image("registry.example:5000/app:1.0") == {"Id": "sha256:aa"}  # '/' and ':' as they are
    assert engine.inspect_image("a b") == {"Id": "sha256:bb"}
    assert engine.images() == [{"Id": "sha256:aa", "Size": 5}]
    assert engine.images(all=True) == []
    with pytest.raises(ValueError, match="Expected a string"):
        engine.inspect_volume(None)


def test_a_404_is_not_found_with_the_engines_explanation(fake):
    fake.route("GET", "/v1.41/volumes/gone", {"message": "get gone: no such volume"}, status=404)
    engine, _made = local(fake)
    with pytest.raises(_engine.EngineNotFound) as caught:
        engine.inspect_volume("gone")
    exc = caught.value
    assert str(exc) == (
        '404 Client Error for http+docker://localhost/v1.41/volumes/gone: Not Found ("get gone: no such volume")'
    )
    assert exc.status_code == 404 and exc.response.status_code == 404 and exc.explanation == "get gone: no such volume"
    assert isinstance(exc, _client.not_found_errors()) and isinstance(exc, _client.engine_errors())


def test_other_error_statuses_are_api_errors_not_not_found(fake):
    fake.route("POST", "/v1.41/volumes/create", b"plugin exploded\n", status=500)
    fake.route("GET", "/v1.41/volumes/x", {"message": "conflict"}, status=409)
    engine, _made = local(fake)
    with pytest.raises(_engine.EngineAPIError) as caught:
        engine.create_volume(name="v")
    assert not isinstance(caught.value, _engine.EngineNotFound)
    assert str(caught.value).startswith("500 Server Error for http+docker://localhost/v1.41/volumes/create")
    assert caught.value.explanation == "plugin exploded"  # a body that is not JSON, as text
    with pytest.raises(_engine.EngineAPIError, match=r"409 Client Error.*conflict"):
        engine.inspect_volume("x")


def test_an_answer_that_is_not_json_is_an_error(fake):
    fake.route("GET", "/v1.41/info", b"<html>", status=200)
    engine, _made = local(fake)
    with pytest.raises(_engine.EngineConnectionError, match="other than JSON"):
        engine.info()


def test_no_engine_and_a_silent_engine_are_connection_errors(fake, tmp_path):
    engine = _engine.LocalEngine(str(tmp_path / "nothing.sock"), "1.41", 5, None)
    with pytest.raises(_engine.EngineConnectionError, match=r"nothing\.sock did not answer GET /v1\.41/_ping"):
        engine.ping()
    fake.route("GET", "/v1.41/info", None, status=None)
    slow, _made = local(fake, version="1.41", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(_engine.EngineConnectionError, match="timed out"):
        slow.info()
    assert time.monotonic() - started < 1.5


def test_every_other_call_goes_to_one_sdk_client_made_on_first_need(fake):
    class Sdk:
        def __init__(self):
            self.calls = []

        def create_container(self, image, **kwargs):
            self.calls.append(("create_container", image))
            return {"Id": "c1"}

        def images(self, **kwargs):
            self.calls.append(("images", kwargs))
            return ["sha256:aa"]

        def close(self):
            self.calls.append(("close",))

    sdk = Sdk()
    engine, made = local(fake, sdk=sdk)
    engine.close()  # no SDK client yet: nothing to close
    assert made == []
    threads = [threading.Thread(target=engine.create_container, args=("busybox",)) for _n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == ["1.41"]  # once, with the version agreed with the engine, whichever thread came first
    assert engine.images(quiet=True) == ["sha256:aa"]  # the arguments answered here are the plain ones only
    assert sdk.calls[-1] == ("images", {"name": None, "quiet": True, "all": False, "filters": None})
    engine.close()
    assert sdk.calls[-1] == ("close",)
    with pytest.raises(AttributeError):
        engine.__deepcopy__  # noqa: B018 (dunder probes are not handed on)


def test_socket_path_takes_only_absolute_unix_addresses():
    assert _engine.socket_path("unix:///var/run/docker.sock") == "/var/run/docker.sock"
    assert _engine.socket_path("unix://relative.sock") is None
    assert _engine.socket_path("tcp://10.0.0.5:2375") is None
    assert _engine.socket_path("ssh://user@host") is None
    assert _engine.socket_path(None) is None
