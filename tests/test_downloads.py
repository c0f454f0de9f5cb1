"""Downloads that fail: one clear line (the URL, the reason, where the files go, what to do) and
no partial file left behind, tested against a local server on 127.0.0.1 that cuts the transfer
halfway or serves a corrupt archive, and against a port where nothing listens."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torchvision

from dmcondense.data import tinyimagenet
from dmcondense.data.download import DownloadError
from dmcondense.data.sources import load_split

SIZE = 200_000  # bytes the server announces


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /cut/...: announces SIZE bytes, sends a quarter, closes. GET /corrupt/...: SIZE
    bytes of zeros (complete, but not the archive its checksum names)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        sent = SIZE // 4 if self.path.startswith("/cut/") else SIZE
        self.wfile.write(b"\0" * sent)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_transfer_cut_halfway_leaves_no_partial_archive(server, tmp_path, monkeypatch) -> None:
    url = f"{server}/cut/tiny-imagenet-200.zip"
    monkeypatch.setattr(tinyimagenet, "URL", url)
    with pytest.raises(DownloadError) as error:
        load_split("tinyimagenet", tmp_path, "train", download=True)
    message = str(error.value)
    assert "\n" not in message
    assert f"downloading TinyImageNet from {url} failed (" in message
    assert "tiny-imagenet-200.zip (unpacked: tiny-imagenet-200/wnids.txt" in message
    assert f"in {tmp_path}: download it on a machine with internet access" in message
    assert "or set data_dir=" in message
    assert files_under(tmp_path) == []  # nothing a later run could take for the archive


def test_a_complete_but_corrupt_archive_fails_its_checksum_and_is_removed(
    server, tmp_path, monkeypatch
) -> None:
    url = f"{server}/corrupt/cifar-10-python.tar.gz"
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url)
    with pytest.raises(DownloadError, match="corrupted") as error:
        load_split("cifar10", tmp_path, "train", download=True)
    assert f"from {url} failed" in str(error.value)
    assert f"expected as cifar-10-python.tar.gz in {tmp_path}" in str(error.value)
    assert files_under(tmp_path) == []


def test_an_unreachable_host_fails_at_once_with_the_reason(tmp_path, monkeypatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}/cifar-10-python.tar.gz"
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url)
    with pytest.raises(DownloadError, match="refused") as error:
        load_split("cifar10", tmp_path, "test", download=True)
    assert f"downloading cifar10 from {url} failed (URLError: " in str(error.value)
    assert files_under(tmp_path) == []


def test_files_that_were_there_before_a_failed_download_stay(server, tmp_path, monkeypatch):
    kept = tmp_path / "notes.txt"
    kept.write_text("mine\n")
    monkeypatch.setattr(tinyimagenet, "URL", f"{server}/cut/tiny-imagenet-200.zip")
    with pytest.raises(DownloadError):
        load_split("tinyimagenet", tmp_path, "test", download=True)
    assert files_under(tmp_path) == [kept]
