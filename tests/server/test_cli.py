"""`tunesmith serve` refuses what it cannot do safely, in one line."""

from __future__ import annotations

import socket

from tunesmith.cli import main


def test_network_bind_needs_a_token(capsys, monkeypatch):
    monkeypatch.delenv("TUNESMITH_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--token" in err and "0.0.0.0" in err


def test_short_token_and_bad_media_dir(capsys, tmp_path):
    assert main(["serve", "--token", "abc"]) == 1
    assert "at least 8" in capsys.readouterr().err
    assert main(["serve", "--media-dir", str(tmp_path / "missing"), "--data", str(tmp_path / "d")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_port_in_use_is_one_line(mono_ckpt, tmp_path, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        assert main(["serve", "-m", str(mono_ckpt[0]), "--port", str(port), "--data", str(tmp_path)]) == 1
    finally:
        taken.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"tunesmith: error: cannot listen on 127.0.0.1:{port}")


def test_missing_server_packages_are_one_line(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve"]) == 1
    assert capsys.readouterr().err.strip() == ("tunesmith: error: tunesmith serve needs fastapi, uvicorn and "
                                               "python-multipart: pip install 'tunesmith[server]'")


def test_main_gives_the_logger_back(caplog):
    import logging

    main(["serve", "--token", "abc"])
    assert logging.getLogger("tunesmith").propagate  # caplog, and programs embedding main(), still see records
