// error.h: draftalign::Error, the one exception type every user-facing failure is reported with, and DA_CHECK.
// The CLI catches Error, prints "error: <what>" once and exits non-zero. Messages name the file and the place
// (file:line:column, tensor name, byte offset) and, where there is one, a hint on how to fix it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace draftalign {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Concatenates its arguments with operator<< into one string.
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

}  // namespace draftalign

// DA_CHECK(cond, parts...): throw draftalign::Error(str_cat(parts...)) when cond is false.
#define DA_CHECK(cond, ...)                                          \
  do {                                                               \
    if (!(cond)) throw ::draftalign::Error(::draftalign::str_cat(__VA_ARGS__)); \
  } while (0)
