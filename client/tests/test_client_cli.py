from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sonic_client import Client
from sonic_client._cli import main
from sonic_client.protodune import classify_event, generate_event

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "reco_job.py"


def test_cli_metadata_and_infer(fake_triton: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BEARER_TOKEN", "good-token")
    assert main(["--url", fake_triton.url, "server-metadata"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "fake-triton"
    assert main(["--url", fake_triton.url, "model-metadata", "emtrack_michel"]) == 0
    assert "main_input" in capsys.readouterr().out
    x = np.zeros((10, 48, 48, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["--url", fake_triton.url, "infer", "emtrack_michel", str(tmp_path / "x.npy"),
                 "--batch-size", "4", "--compression", "auto", "--save", str(tmp_path / "o.npz")]) == 0
    out = capsys.readouterr().out
    assert "10 items in 3 requests" in out
    assert np.load(tmp_path / "o.npz")["identity"].shape == (10, 48, 48, 1)
    assert main(["token"]) == 0
    out = capsys.readouterr().out
    assert "BEARER_TOKEN" in out
    assert "good-token" not in out


def test_cli_reports_missing_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--token-file", str(tmp_path / "none"), "token"]) == 1
    assert "none" in capsys.readouterr().err


def test_classify_event_and_example(fake_triton: Any, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with Client(fake_triton.url, token="good-token") as c:
        rep = classify_event(c, generate_event(1), batch_size=500)
    assert rep.n_hits > 0
    assert rep.n_batches == -(-rep.n_hits // 500)
    assert sum(rep.counts[k] for k in ("track", "shower", "none")) == rep.n_hits
    assert rep.preprocess_s > 0
    assert rep.wait_s >= 0
    monkeypatch.setenv("BEARER_TOKEN", "good-token")
    spec = importlib.util.spec_from_file_location("reco_job", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--url", fake_triton.url, "--events", "2", "--batch-size", "235"]) == 0
    out = capsys.readouterr().out
    assert "preprocess" in out
    assert "mean" in out


CPP = Path(__file__).resolve().parents[1] / "examples" / "cpp"


def test_cpp_token_discovery_matches_python(tmp_path: Path) -> None:
    """Compile the C++ discovery header from docs/client.md and check it agrees with Python."""
    import os
    import shutil
    import subprocess

    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler: the C++ token-discovery snippet is not compile-checked")
    exe = tmp_path / "discover"
    subprocess.run([cxx, "-std=c++17", "-Wall", "-Werror", "-O0", "-o", str(exe),
                    str(CPP / "discover_main.cpp")], check=True, timeout=60)
    f = tmp_path / "tok"
    f.write_text(" from-file\n")
    base = {k: v for k, v in os.environ.items()
            if k not in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "XDG_RUNTIME_DIR")}
    from sonic_client import discover_token

    for extra in ({"BEARER_TOKEN": "from-env", "BEARER_TOKEN_FILE": str(f)},
                  {"BEARER_TOKEN_FILE": str(f)}):
        env = {**base, **extra}
        got = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        assert got == discover_token(env)
