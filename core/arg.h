// NORMA_ARG: an option of an options struct, as libtorch's TORCH_ARG makes them.
// NORMA_ARG(double, eps) = 1e-5; gives the chained setter `opts.eps(1e-3)`,
// the getter `opts.eps()` and the field `opts.eps_` (kept public: code written
// before the getter existed reads it).
#pragma once
#include <utility>

#define NORMA_ARG(T, name)                                                    \
  auto name(T new_##name)->decltype(*this) {                                  \
    this->name##_ = std::move(new_##name);                                    \
    return *this;                                                             \
  }                                                                           \
  const T& name() const noexcept { return this->name##_; }                    \
  T name##_
