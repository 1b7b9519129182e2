"""The C++ recipe in docs/client.md type-checks against the Triton C++ client's signatures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[1]
DOC = CLIENT.parent / "docs" / "client.md"
MOCK = Path(__file__).resolve().parent / "cpp_mock"
CPP = CLIENT / "examples" / "cpp"


def _cpp_snippet() -> str:
    section = DOC.read_text(encoding="utf-8").split("## C++ jobs", 1)[1]
    return section.split("```cpp\n", 1)[1].split("```", 1)[0]


def test_cpp_snippet_type_checks_with_size_t_from_patches_size(tmp_path: Path) -> None:
    """The snippet's statements go into a function of the job's natural types (a
    ``std::vector<float>`` of patches, ``std::string`` ids) and are compiled with
    ``-fsyntax-only -Werror`` against a declarations-only copy of Triton's client API."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler: the C++ snippet in docs/client.md is not type-checked")
    snippet = _cpp_snippet()
    assert "patches.size()" in snippet  # the patch count comes from the vector, as a size_t
    lines = snippet.splitlines()
    includes = [line for line in lines if line.startswith("#include")]
    body = [line for line in lines if not line.startswith("#include")]
    source = tmp_path / "snippet.cpp"
    source.write_text("\n".join([
        *includes, "#include <string>", "#include <vector>", "",
        "void run_snippet(const std::vector<float>& patches, const std::string& job_id,",
        "                 const std::string& dataset) {", *body, "}", ""]))
    done = subprocess.run(
        [cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Wconversion", "-Werror",
         "-I", str(MOCK), "-I", str(CPP), str(source)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
