// The single-process group and the scalar helpers.
#include "process_group.h"

#include <cstdlib>

#include "../error.h"

namespace norma::dist {

namespace {

class SingleProcessGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single-process"; }
  void allreduce_sum(double*, size_t) override {}
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(int64_t*, size_t) override {}
  void broadcast(float*, size_t, int root) override { check_root(root); }
  void broadcast(double*, size_t, int root) override { check_root(root); }
  void broadcast(int64_t*, size_t, int root) override { check_root(root); }
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::exit(exit_code); }

 private:
  static void check_root(int root) {
    if (root != 0) fail("broadcast: root {} is not a rank of the single-process group (only rank 0)", root);
  }
};

}  // namespace

std::shared_ptr<ProcessGroup> single_process() {
  static auto group = std::make_shared<SingleProcessGroup>();
  return group;
}

double allreduce_sum(double value, ProcessGroup& pg) {
  pg.allreduce_sum(&value, 1);
  return value;
}

double allreduce_mean(double value, ProcessGroup& pg) { return allreduce_sum(value, pg) / pg.size(); }

int64_t allreduce_sum(int64_t value, ProcessGroup& pg) {
  pg.allreduce_sum(&value, 1);
  return value;
}

}  // namespace norma::dist
