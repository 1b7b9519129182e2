// WLCG Bearer Token Discovery for C++ jobs (LArSoft / CMSSW modules using Triton's C++ client).
// Same order as sonic_client (Python): BEARER_TOKEN, BEARER_TOKEN_FILE, $XDG_RUNTIME_DIR/bt_u$UID,
// /tmp/bt_u$UID; empty or missing places are skipped. Header-only, standard C++17 + POSIX.
// Call it per request (or when the file's mtime changes): token agents rewrite the file.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sonic {

inline std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

inline std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::stringstream buf;
  buf << in.rdbuf();
  return trim(buf.str());
}

// Returns the token (without "Bearer "); throws std::runtime_error naming every place tried.
inline std::string discover_bearer_token() {
  std::vector<std::string> tried;
  const std::string uid = std::to_string(geteuid());
  if (const char* v = std::getenv("BEARER_TOKEN"); v && !trim(v).empty()) return trim(v);
  tried.emplace_back("environment variable BEARER_TOKEN");
  std::vector<std::string> files;
  if (const char* f = std::getenv("BEARER_TOKEN_FILE"); f && *f) files.emplace_back(f);
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x)
    files.emplace_back(std::string(x) + "/bt_u" + uid);
  files.emplace_back("/tmp/bt_u" + uid);
  for (const auto& path : files) {
    std::string tok = read_token_file(path);
    if (!tok.empty()) return tok;
    tried.emplace_back("file " + path);
  }
  std::string msg = "no bearer token found; tried:";
  for (const auto& t : tried) msg += "\n  - " + t;
  throw std::runtime_error(msg);
}

}  // namespace sonic
