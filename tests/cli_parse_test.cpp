// The `norma` command line's parser in-process (apps/cli.h): what a command
// fills in, and how bad values are refused before any command runs.
#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <vector>

#include "cli.h"

using namespace norma;

namespace {

// Parses `args` (split on spaces) after "norma"; returns CLI11's error message, or "" on success.
std::string parse(app::CliOptions& opt, const std::string& args) {
  std::vector<std::string> words{"norma"};
  std::istringstream in(args);
  for (std::string w; in >> w;) words.push_back(w);
  std::vector<const char*> argv;
  for (const std::string& w : words) argv.push_back(w.c_str());
  auto cli = app::make_cli(opt);
  try {
    cli->parse(int(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("cli parser: a train command fills the train config and nothing else") {
  app::CliOptions opt;
  REQUIRE(parse(opt, "train --epochs 2 --lr 0.1 --momentum 0.5 --weight-decay 0 --warmup 1.5 --label-smoothing 0.1 "
                     "--no-augment --limit 100 --clip-grad-norm 2.5") == "");
  CHECK(opt.train.epochs == 2);
  CHECK(opt.train.lr == 0.1);
  CHECK(opt.train.momentum == 0.5);
  CHECK(opt.train.weight_decay == 0);
  CHECK(opt.train.warmup == 1.5);
  CHECK(opt.train.label_smoothing == 0.1);
  CHECK(opt.no_augment);
  CHECK(opt.train.limit == 100);
  CHECK(opt.train.clip_grad_norm == 2.5);
  CHECK(opt.eval.batch_size == app::EvalConfig{}.batch_size);
}

TEST_CASE("cli parser: an unknown command is named with the known ones") {
  app::CliOptions opt;
  auto cli = app::make_cli(opt);
  const char* bad[] = {"norma", "trian", "--epochs", "1"};
  CHECK(app::unknown_command(*cli, 4, bad) ==
        "unknown command 'trian' (expected one of: train, eval, bench, summary, download, demo)");
  const char* good[] = {"norma", "train"};
  CHECK(app::unknown_command(*cli, 2, good).empty());
  const char* flag[] = {"norma", "--help"};
  CHECK(app::unknown_command(*cli, 2, flag).empty());
  const char* none[] = {"norma"};
  CHECK(app::unknown_command(*cli, 1, none).empty());
}

TEST_CASE("cli parser: --bn-preset takes the presets' names and their older spellings") {
  for (auto [given, stored] : {std::pair{"brainpy_2_7", "brainpy_2_7"}, std::pair{"brainpy", "brainpy_2_7"},
                               std::pair{"brainpy-2.8", "brainpy_2_8"}, std::pair{"numpy_ml", "numpy_ml"}}) {
    app::CliOptions opt;
    REQUIRE(parse(opt, std::string("train --bn-preset ") + given) == "");
    CHECK(opt.train.bn_preset == stored);
  }
  app::CliOptions opt;
  CHECK(parse(opt, "train --bn-preset brainpy_2_9") != "");
}
