// Fuzzes the `norma` command line's parser (apps/cli.h, the one main.cpp
// uses): each input is an argv after "norma", arguments separated by NUL or
// newline. Parsing runs no command. It must either refuse the arguments
// (unknown_command, or a CLI11 error whose message and help can be printed)
// or select one subcommand with no value outside its flag's range.
//
// "Outside" is as CLI11's checks compare: NaN compares false both ways, so
// `--lr nan` parses, and the commands refuse it (the trainer's config check,
// run_demo; tests/errors_cli_test.cpp). Infinities are outside PositiveNumber,
// but a float flag is range-checked as a double (demo --lr 1e39 parses to inf).
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"
#include "fuzz_util.h"

using namespace norma;

namespace {

// Not outside [lo, hi] as CLI::Range compares: NaN passes.
bool not_outside(double v, double lo, double hi) { return !(v < lo) && !(v > hi); }
constexpr double kMin = std::numeric_limits<double>::min(), kMax = std::numeric_limits<double>::max();
bool positive(double v) { return not_outside(v, kMin, kMax); }  // CLI::PositiveNumber
bool non_negative(double v) { return not_outside(v, 0, kMax); }  // CLI::NonNegativeNumber
bool unset_or_positive(int64_t v) { return v == -1 || v >= 1; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"norma"};
  std::string arg;
  for (size_t i = 0; i <= size; ++i) {
    if (i == size || data[i] == '\0' || data[i] == '\n') {
      args.push_back(arg);
      arg.clear();
    } else {
      arg += char(data[i]);
    }
  }
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  const int argc = int(argv.size());

  app::CliOptions opt;
  std::unique_ptr<CLI::App> cli = app::make_cli(opt);
  if (!app::unknown_command(*cli, argc, argv.data()).empty()) return 0;
  try {
    cli->parse(argc, argv.data());
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    cli->exit(e, out, err);  // what main prints: the message, or --help's text
    return 0;
  }

  // Parsed: one command, and its numbers are what its flags' help promises.
  FUZZ_CHECK(cli->get_subcommands().size() == 1);
  const std::string command = cli->get_subcommands()[0]->get_name();
  if (command == "train") {
    const app::TrainConfig& t = opt.train;
    FUZZ_CHECK(t.epochs >= 1 && t.batch_size >= 2 && t.batch_size <= (int64_t{1} << 20));
    FUZZ_CHECK(positive(t.lr) && not_outside(t.momentum, 0, 0.999999) && not_outside(t.label_smoothing, 0, 0.999999));
    FUZZ_CHECK(non_negative(t.weight_decay) && non_negative(t.warmup));
    FUZZ_CHECK(t.threads >= 0 && unset_or_positive(t.limit) && unset_or_positive(t.test_limit));
    FUZZ_CHECK(t.bn_stats_every >= 1);
  } else if (command == "eval") {
    FUZZ_CHECK(!opt.eval.checkpoint.empty() && opt.eval.batch_size >= 1);
    FUZZ_CHECK(opt.eval.threads >= 0 && unset_or_positive(opt.eval.limit));
  } else if (command == "bench") {
    const app::BenchConfig& b = opt.bench;
    FUZZ_CHECK(b.batch_size >= 2 && b.batch_size <= (int64_t{1} << 20) && b.steps >= 1 && b.warmup >= 0);
    FUZZ_CHECK(b.threads >= 0);
  } else if (command == "download") {
    FUZZ_CHECK(opt.dataset == "cifar10");
  } else if (command == "demo") {
    FUZZ_CHECK(opt.demo_steps >= 1 && (positive(opt.demo_lr) || std::isinf(opt.demo_lr)));
  }
  return 0;
}
