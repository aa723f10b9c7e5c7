// The README promises two commands (### Train, ### Test) and CI must run the
// Test one exactly as written: .ci/run has to contain that line verbatim, so
// editing either file alone fails here.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  INFO("reading " << path);
  REQUIRE(in.good());
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The one command in the ```sh block directly under the README heading `heading`.
std::string readme_command(const std::string& heading) {
  std::vector<std::string> lines = read_lines(NORMA_SOURCE_DIR "/README.md");
  size_t i = 0;
  while (i < lines.size() && lines[i] != heading) ++i;
  INFO("README.md heading '" << heading << "'");
  REQUIRE(i < lines.size());
  ++i;
  while (i < lines.size() && lines[i].empty()) ++i;
  REQUIRE(i < lines.size());
  REQUIRE(lines[i] == "```sh");
  std::vector<std::string> block;
  for (++i; i < lines.size() && lines[i] != "```"; ++i) block.push_back(lines[i]);
  REQUIRE(i < lines.size());  // the block is closed
  INFO("the block must hold exactly one shell line");
  REQUIRE(block.size() == 1);
  REQUIRE(!block[0].empty());
  return block[0];
}

}  // namespace

TEST_CASE("readme: .ci/run runs the README's Test command verbatim") {
  const std::string command = readme_command("### Test");
  const std::string ci = NORMA_SOURCE_DIR "/.ci/run";
  std::vector<std::string> lines = read_lines(ci);
  bool found = false;
  for (const std::string& line : lines) found = found || line == command;
  INFO("README.md's Test command: " << command);
  CHECK(found);
  REQUIRE(!lines.empty());
  CHECK(lines[0] == "#!/usr/bin/env bash");
  auto perms = std::filesystem::status(ci).permissions();
  CHECK((perms & std::filesystem::perms::owner_exec) != std::filesystem::perms::none);
}

TEST_CASE("readme: Train and Test are one line each, starting from a fresh machine") {
  for (const char* heading : {"### Train", "### Test"}) {
    std::string command = readme_command(heading);
    INFO(heading << ": " << command);
    CHECK(command.rfind("scripts/install-deps.sh && ", 0) == 0);
  }
}
