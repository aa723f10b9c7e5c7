// Norma's error type and internal invariant checks.
// Public entry points throw norma::Error with a message naming the op and every
// shape or value involved; NORMA_CHECK guards internal invariants (file and line).
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace norma {

// Every error Norma reports to a user. Derived from std::runtime_error so a
// plain `catch (const std::exception&)` also sees it.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws norma::Error with a fmt-formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace norma

// Internal invariant: a failure here is a bug in Norma, not in the caller.
#define NORMA_CHECK(cond)                                                               \
  do {                                                                                  \
    if (!(cond))                                                                        \
      throw ::norma::Error(                                                             \
          ::fmt::format("internal error at {}:{}: check '{}' failed", __FILE__, __LINE__, \
                        #cond));                                                        \
  } while (0)
