"""Connection options -> docker.APIClient arguments: explicit options, environment, defaults."""

from __future__ import annotations

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _client


def params(**given):
    base = dict.fromkeys(_client.DOCKER_COMMON_ARGS)
    base.update(given)
    return base


def test_defaults_without_options_or_environment():
    assert _client.connection_kwargs(params(), environ={}) == {
        "base_url": "unix:///var/run/docker.sock",
        "version": "auto",
        "timeout": 60,
    }


def test_explicit_options_are_used():
    kwargs = _client.connection_kwargs(
        params(docker_host="tcp://10.0.0.5:2375", api_version="1.41", timeout=5), environ={}
    )
    assert kwargs == {"base_url": "tcp://10.0.0.5:2375", "version": "1.41", "timeout": 5}


def test_validate_certs_takes_files_from_docker_cert_path():
    kwargs = _client.connection_kwargs(
        params(docker_host="tcp://engine:2376", validate_certs=True, tls_hostname="engine.example"),
        environ={"DOCKER_CERT_PATH": "/certs"},
    )
    assert kwargs["tls"] == {
        "client_cert": ("/certs/cert.pem", "/certs/key.pem"),
        "ca_cert": "/certs/ca.pem",
        "verify": True,
        "assert_hostname": "engine.example",
    }


def test_explicit_cert_options_win_over_docker_cert_path():
    kwargs = _client.connection_kwargs(
        params(validate_certs=True, ca_path="/mine/ca.pem", client_cert="/mine/c.pem", client_key="/mine/k.pem"),
        environ={"DOCKER_CERT_PATH": "/certs"},
    )
    assert kwargs["tls"]["ca_cert"] == "/mine/ca.pem"
    assert kwargs["tls"]["client_cert"] == ("/mine/c.pem", "/mine/k.pem")


def test_tls_without_verification_checks_no_ca_or_hostname():
    kwargs = _client.connection_kwargs(params(tls=True, tls_hostname="ignored"), environ={})
    assert kwargs["tls"] == {"client_cert": None, "ca_cert": None, "verify": False, "assert_hostname": None}


@pytest.mark.parametrize(
    ("option", "variable"),
    [
        ("docker_host", "DOCKER_HOST"),
        ("api_version", "DOCKER_API_VERSION"),
        ("timeout", "DOCKER_TIMEOUT"),
        ("tls", "DOCKER_TLS"),
        ("validate_certs", "DOCKER_TLS_VERIFY"),
        ("tls_hostname", "DOCKER_TLS_HOSTNAME"),
    ],
)
def test_every_connection_option_falls_back_to_its_environment_variable(option, variable):
    fallback = _client.DOCKER_COMMON_ARGS[option]["fallback"]
    assert fallback[1] == [variable]


@pytest.mark.parametrize(("text", "expected"), [("7.1.0", (7, 1, 0)), ("5.0", (5, 0, 0)), ("6.1.3rc1", (6, 1, 3))])
def test_version_tuple(text, expected):
    assert _client._version_tuple(text) == expected


def _fresh_python(code):
    """The JSON that ``code`` (with json and sys imported) prints last, run in a fresh interpreter with this test's
    import path."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return json.loads(out.stdout.splitlines()[-1])


def _modules_after(code):
    """The names in sys.modules after ``code`` runs in a fresh interpreter."""
    return set(_fresh_python(f"{code}\nprint(json.dumps(sorted(sys.modules)))"))


def test_the_sdk_is_imported_on_first_use_only():
    # the journal steps of docker_migrate_guard start without it (about 0.1 s per step)
    base = "from ansible_collections.ferry.docker.plugins.module_utils import _client, _journal"
    assert "docker" not in _modules_after(base)
    assert "docker" in _modules_after(
        base + "\nfrom ansible_collections.ferry.docker.plugins.module_utils._client import DockerException"
    )
    assert "docker" in _modules_after(base + "\n_journal.docker_exception()")


def test_docker_exception_is_the_sdks_class():
    import docker.errors

    assert _client.docker_exception() is docker.errors.DockerException
    assert _client.DockerException is docker.errors.DockerException
    with pytest.raises(AttributeError):
        _client.NoSuchThing  # noqa: B018


def test_the_sdks_errors_are_in_engine_errors_only_once_imported():
    before, after, loaded = _fresh_python(
        "from ansible_collections.ferry.docker.plugins.module_utils import _client\n"
        "names = lambda t: sorted(c.__name__ for c in t)\n"
        "before = (names(_client.engine_errors()), names(_client.not_found_errors()))\n"
        "import docker.errors\n"
        "after = (names(_client.engine_errors()), names(_client.not_found_errors()))\n"
        "print(json.dumps([before, after, 'docker' in sys.modules]))"
    )
    assert before == [["EngineError"], ["EngineNotFound"]]
    assert after == [["DockerException", "EngineError", "RequestException"], ["EngineNotFound", "NotFound"]]
    assert loaded
