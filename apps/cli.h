// The `norma` command line as a CLI11 app: every subcommand and flag, bound to
// the configs they fill. Building and parsing it runs nothing, so main.cpp and
// the CLI fuzzer (tests/fuzz/cli_fuzz.cpp) share exactly one parser.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "bench.h"
#include "trainer.h"

namespace norma::app {

// What a parse fills, one block per subcommand; the defaults are the CLI's.
struct CliOptions {
  TrainConfig train;
  bool no_augment = false, distributed = false, no_sync_bn = false;
  EvalConfig eval;
  bool eval_json = false;
  BenchConfig bench;
  bool bench_json = false;
  std::string summary_model = "cifar-small";
  std::string dataset, download_dir = "data", archive;  // download
  int demo_steps = 2000;
  float demo_lr = 0.1f;
  uint64_t demo_seed = 0;
};

// The app with every subcommand; each option writes into a field of `opt`,
// which must outlive the app. Exactly one subcommand is required.
std::unique_ptr<CLI::App> make_cli(CliOptions& opt);

// CLI11 answers an unknown command with "A subcommand is required"; this names
// it: "unknown command 'x' (expected one of: train, eval, ...)" when argv[1]
// is neither a flag nor a subcommand of `app`, else "".
std::string unknown_command(const CLI::App& app, int argc, const char* const* argv);

}  // namespace norma::app
