// Prints the discovered token (test helper for wlcg_token.hpp; do not ship into jobs).
#include <iostream>

#include "wlcg_token.hpp"

int main() {
  try {
    std::cout << sonic::discover_bearer_token() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << std::endl;
    return 1;
  }
}
