"""Corpus lookup order, download verification (local HTTP server), split and vocabulary (issue 4, Data)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from attnbench import data
from attnbench.errors import AttnbenchError

from testdata import CORPUS
pytestmark = pytest.mark.skipif(not CORPUS.is_file(), reason=f"corpus not at {CORPUS}")


@pytest.fixture()
def server(tmp_path):
    """127.0.0.1 HTTP server over a folder holding the good copy (good.txt) and a corrupted one (bad.txt)."""
    root = tmp_path / "www"
    root.mkdir()
    raw = CORPUS.read_bytes()
    (root / "good.txt").write_bytes(raw)
    (root / "bad.txt").write_bytes(raw[:-1] + b"?")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_lookup_order(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), data.ENV_VAR: str(CORPUS)}
    own = tmp_path / "own.txt"
    own.write_text("any text at all " * 20)
    assert data.find_corpus(own, env) == (own, "--data")  # --data first, no checksum check
    assert data.find_corpus(None, env) == (CORPUS, data.ENV_VAR)
    cached = data.cache_path(env)
    assert cached == tmp_path / "cache" / "attnbench" / "tinyshakespeare" / "input.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(CORPUS.read_bytes())
    del env[data.ENV_VAR]
    assert data.find_corpus(None, env) == (cached, "cache")
    # no XDG_CACHE_HOME: ~/.cache
    assert data.cache_dir({}) == Path.home() / ".cache" / "attnbench"


def test_env_and_cache_copies_with_wrong_checksum_are_refused(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(CORPUS.read_bytes()[:-1] + b"?")
    with pytest.raises(AttnbenchError, match="pass it explicitly with --data"):
        data.find_corpus(None, {data.ENV_VAR: str(bad), "XDG_CACHE_HOME": str(tmp_path)})
    assert data.find_corpus(bad, {})[1] == "--data"  # the user's own file is accepted
    with pytest.raises(AttnbenchError, match="not found"):
        data.find_corpus(tmp_path / "missing.txt", {})


def test_download_verified_and_cached_atomically(tmp_path, server):
    env = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    path, where = data.find_corpus(None, env, url=f"{server}/good.txt")
    assert where == "download" and path == data.cache_path(env)
    assert path.read_bytes() == CORPUS.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["input.txt"]  # no temporary file left behind
    # second lookup: from the cache, no network
    assert data.find_corpus(None, env, url=f"{server}/nothing-here.txt") == (path, "cache")


def test_corrupted_download_refused_nothing_written(tmp_path, server):
    env = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    with pytest.raises(AttnbenchError, match="refused"):
        data.find_corpus(None, env, url=f"{server}/bad.txt")
    assert not data.cache_path(env).parent.exists()  # nothing written, not even a temporary file


def test_offline_says_how_to_provide_the_file(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    with pytest.raises(AttnbenchError) as e:
        data.find_corpus(None, env, url="http://127.0.0.1:9/input.txt")  # port 9: nothing listens
    msg = str(e.value)
    assert "\n" not in msg and "--data" in msg and data.ENV_VAR in msg and data.URL in msg


def test_split_and_vocabulary():
    c = data.load_corpus(CORPUS)
    n = 1_115_394
    assert c.vocab_size == 65
    assert (len(c.train), len(c.val), len(c.test)) == data.split_sizes(n) == (1_003_854, 55_769, 55_771)
    text = CORPUS.read_text(encoding="utf-8")
    assert c.decode(c.train[:50]) == text[:50]
    assert c.decode(c.val[:50]) == text[1_003_854:1_003_904]  # contiguous, in order
    assert c.decode(c.test[-50:]) == text[-50:]


def test_non_utf8_refused(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"caf\xe9 " * 100)
    with pytest.raises(AttnbenchError, match="UTF-8"):
        data.load_corpus(p)
