// docs/errors.md catalogues every error message Norma throws. This keeps it from
// drifting: every fail() format string in the sources has exactly one row, every
// row is a format the sources still have, and every test a row names exists and
// spells out (part of) the message it is said to provoke.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = NORMA_SOURCE_DIR;

// The folders whose fail() calls reach users (tests/ and docs/examples/ are not scanned).
const char* const kSourceDirs[] = {"core", "layers", "optim", "data", "apps", "bench"};

// Functions that forward a message format to fail(): the format is catalogued
// with the prefix the wrapper adds.
struct Wrapper {
  const char* file;
  const char* name;
  const char* prefix;
};
const Wrapper kWrappers[] = {{"core/safetensors.cpp", "bad", "load_safetensors: '{}': "}};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// One fail() call: where, and its format as written (adjacent literals joined,
// escapes left as in the source).
struct Site {
  std::string file;
  int line = 0;
  std::string format;  // empty: the first argument is not a string literal
};

// Index just past the string literal starting at s[i] == '"'.
size_t skip_literal(const std::string& s, size_t i, char quote) {
  for (++i; i < s.size() && s[i] != quote; ++i)
    if (s[i] == '\\') ++i;
  return i + 1;
}

// A small C++ lexer: skips comments, char/string/raw literals and numbers (with
// digit separators), and records each call `name(` of a message function.
std::vector<Site> scan_file(const std::string& rel, const std::string& s) {
  std::map<std::string, std::string> names = {{"fail", ""}};
  for (const Wrapper& w : kWrappers)
    if (rel == w.file) names[w.name] = w.prefix;
  std::vector<Site> out;
  char prev = 0;  // last significant character before the current token
  size_t i = 0;
  auto skip_space_and_comments = [&](size_t k) {
    for (;;) {
      while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
      if (s.compare(k, 2, "//") == 0) k = s.find('\n', k);
      else if (s.compare(k, 2, "/*") == 0) k = s.find("*/", k) + 2;
      else return k;
      if (k == std::string::npos) return s.size();
    }
  };
  while (i < s.size()) {
    const char c = s[i];
    if (s.compare(i, 2, "//") == 0 || s.compare(i, 2, "/*") == 0) {
      i = skip_space_and_comments(i);
      continue;
    }
    if (c == '"' || c == '\'') {
      i = skip_literal(s, i, c);
      prev = c;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {  // a number, maybe 100'000
      while (i < s.size() && (ident_char(s[i]) || s[i] == '.' || (s[i] == '\'' && i + 1 < s.size() && ident_char(s[i + 1]))))
        ++i;
      prev = '0';
      continue;
    }
    if (!ident_char(c)) {
      if (!std::isspace(static_cast<unsigned char>(c))) prev = c;
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && ident_char(s[j])) ++j;
    const std::string id = s.substr(i, j - i);
    if ((id == "R" || id == "LR" || id == "uR" || id == "UR" || id == "u8R") && j < s.size() && s[j] == '"') {
      const size_t open = s.find('(', j);
      const std::string delim = ")" + s.substr(j + 1, open - j - 1) + "\"";
      i = s.find(delim, open) + delim.size();
      prev = '"';
      continue;
    }
    size_t k = skip_space_and_comments(j);
    auto it = names.find(id);
    // A member call (x.fail(), in.bad()) is not a message function.
    if (it != names.end() && k < s.size() && s[k] == '(' && prev != '.' && prev != '>') {
      Site site{rel, int(std::count(s.begin(), s.begin() + long(i), '\n')) + 1, ""};
      k = skip_space_and_comments(k + 1);
      std::string fmt;
      while (k < s.size() && s[k] == '"') {
        const size_t end = skip_literal(s, k, '"');
        fmt += s.substr(k + 1, end - k - 2);
        k = skip_space_and_comments(end);
      }
      if (!fmt.empty()) site.format = it->second + fmt;
      out.push_back(site);
    }
    prev = id.back();
    i = j;
  }
  return out;
}

std::vector<Site> scan_sources() {
  std::vector<Site> sites;
  for (const char* dir : kSourceDirs) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(kRoot / dir))
      if (e.is_regular_file() && (e.path().extension() == ".cpp" || e.path().extension() == ".h"))
        files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& p : files) {
      const std::string rel = fs::relative(p, kRoot).generic_string();
      for (Site& site : scan_file(rel, slurp(p))) sites.push_back(std::move(site));
    }
  }
  return sites;
}

// The catalogue shows a format with \" written as ".
std::string doc_form(const std::string& format) {
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] == '\\' && i + 1 < format.size() && format[i + 1] == '"') continue;
    out += format[i];
  }
  return out;
}

// The literal pieces of a format between its {} placeholders ({{ and }} are braces).
std::vector<std::string> fragments(const std::string& format) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < format.size(); ++i) {
    if ((format[i] == '{' || format[i] == '}') && i + 1 < format.size() && format[i + 1] == format[i]) {
      out.back() += format[i++];
    } else if (format[i] == '{') {
      i = format.find('}', i);
      out.emplace_back();
    } else {
      out.back() += format[i];
    }
  }
  return out;
}

// A piece without the separators around it (" ", ":", ",", ";", "'"), which a
// test often writes next to a value it builds.
std::string trim(const std::string& s) {
  const char* sep = " :,;'";
  const size_t a = s.find_first_not_of(sep), b = s.find_last_not_of(sep);
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// What a test of this message must spell out: the longest literal piece of its
// format, trimmed, a leading op name aside ("conv2d: ", "load_safetensors: '":
// the op's other messages share it); "" when that is shorter than 5 characters
// (generic formats like "{}: {}").
std::string signature(const std::string& format) {
  std::vector<std::string> frags = fragments(format);
  const std::string head = trim(frags.front());
  const bool op_prefix = frags.size() > 1 && !head.empty() &&
                         std::all_of(head.begin(), head.end(), [](char c) { return ident_char(c) || c == ':'; });
  std::string best;
  for (size_t i = op_prefix ? 1 : 0; i < frags.size(); ++i)
    if (trim(frags[i]).size() > best.size()) best = trim(frags[i]);
  return best.size() >= 5 ? best : "";
}

// Cells of a Markdown table row, split on unescaped '|', with \| unescaped.
std::vector<std::string> cells(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 1; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') {
      cur += '|';
      ++i;
    } else if (line[i] == '|') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += line[i];
    }
  }
  for (std::string& c : out) {
    const size_t a = c.find_first_not_of(' '), b = c.find_last_not_of(' ');
    c = a == std::string::npos ? "" : c.substr(a, b - a + 1);
  }
  return out;
}

// The contents of the code spans (`x` or ``x``) in a cell, as CommonMark reads them.
std::vector<std::string> code_spans(const std::string& cell) {
  std::vector<std::string> out;
  size_t i = 0;
  while ((i = cell.find('`', i)) != std::string::npos) {
    size_t n = 0;
    while (i + n < cell.size() && cell[i + n] == '`') ++n;
    const std::string fence(n, '`');
    size_t end = i + n;
    for (;;) {
      end = cell.find(fence, end);
      if (end == std::string::npos || end + n >= cell.size() || cell[end + n] != '`') break;
      while (end < cell.size() && cell[end] == '`') ++end;  // a longer run is not the fence
    }
    if (end == std::string::npos) break;
    std::string content = cell.substr(i + n, end - i - n);
    if (content.size() >= 2 && content.front() == ' ' && content.back() == ' ' &&
        content.find_first_not_of(' ') != std::string::npos)
      content = content.substr(1, content.size() - 2);
    out.push_back(content);
    i = end + n;
  }
  return out;
}

struct Row {
  int line = 0;
  std::string format;              // the Message cell's first code span (catalogue tables only)
  std::vector<std::string> tests;  // the Test cell's code spans
  std::string test_cell;
};

struct Catalogue {
  std::vector<Row> rows;        // rows of "| Condition | Message | Test |" tables
  std::vector<Row> other_rows;  // rows of other tables whose last column is Test
};

Catalogue read_catalogue(const std::string& text) {
  Catalogue cat;
  std::vector<std::string> lines;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    if (lines[i].rfind("|", 0) != 0 || lines[i + 1].rfind("|-", 0) != 0) continue;
    const std::vector<std::string> head = cells(lines[i]);
    const bool catalogue = head == std::vector<std::string>{"Condition", "Message", "Test"};
    if (head.empty() || head.back() != "Test") continue;
    size_t r = i + 2;
    for (; r < lines.size() && lines[r].rfind("|", 0) == 0; ++r) {
      const std::vector<std::string> c = cells(lines[r]);
      Row row;
      row.line = int(r) + 1;
      row.test_cell = c.empty() ? "" : c.back();
      // "not provoked: <reason>" may quote code; only other cells name tests.
      if (row.test_cell.rfind("not provoked:", 0) != 0) row.tests = code_spans(row.test_cell);
      if (catalogue) {
        const std::vector<std::string> msg = c.size() == 3 ? code_spans(c[1]) : std::vector<std::string>{};
        row.format = msg.empty() ? "" : msg[0];
        cat.rows.push_back(row);
      } else {
        cat.other_rows.push_back(row);
      }
    }
    i = r - 1;
  }
  return cat;
}

// Every TEST_CASE in tests/*.cpp by name, with its text up to the next TEST_CASE
// (adjacent string literals joined, so a message split over lines is found whole).
std::map<std::string, std::string> test_bodies() {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(kRoot / "tests")) {
    if (e.path().extension() != ".cpp") continue;
    std::string text = slurp(e.path()), joined;
    for (size_t i = 0; i < text.size(); ++i) {  // "abc"\n   "def" -> "abcdef"
      if (text[i] == '"' && !joined.empty()) {
        size_t k = i + 1;
        while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
        if (k > i + 1 && k < text.size() && text[k] == '"' && text.find('\n', i) < k) {
          i = k;
          continue;
        }
      }
      joined += text[i];
    }
    const std::string tag = "TEST_CASE(\"";
    size_t pos = joined.find(tag);
    while (pos != std::string::npos) {
      const size_t name_end = skip_literal(joined, pos + tag.size() - 1, '"') - 1;
      const std::string name = joined.substr(pos + tag.size(), name_end - pos - tag.size());
      const size_t next = joined.find(tag, name_end);
      out[name] = joined.substr(pos, (next == std::string::npos ? joined.size() : next) - pos);
      pos = next;
    }
  }
  return out;
}

// "mpi_test <case>": a case of tests/mpi/mpi_test.cpp (run by mpirun under ctest).
bool mpi_case(const std::string& ref, std::string& body) {
  const std::string prefix = "mpi_test ";
  if (ref.rfind(prefix, 0) != 0) return false;
  body = slurp(kRoot / "tests/mpi/mpi_test.cpp");
  return body.find("c == \"" + ref.substr(prefix.size()) + "\"") != std::string::npos;
}

}  // namespace

TEST_CASE("errors catalogue: the scanner finds fail() formats the way the sources write them") {
  const std::string src =
      "// fail(\"in a comment\")\n"
      "void f() {\n"
      "  if (x) fail(\"a: {} and \"\n"
      "              \"b {}\", 1, 2);\n"
      "  std::string s = \"fail(\\\"in a string\\\")\";\n"
      "  int n = 100'000; char q = '\"';\n"
      "  in.bad(); p->fail(\"member\");\n"
      "  fail (\"quote \\\" and {{braces}}\");\n"
      "  fail(kFormat, 1);\n"
      "  bad(\"wrapped {}\", 3);\n"
      "}\n";
  const std::vector<Site> plain = scan_file("x.cpp", src);
  REQUIRE(plain.size() == 3);
  CHECK(plain[0].line == 3);
  CHECK(plain[0].format == "a: {} and b {}");
  CHECK(plain[1].format == "quote \\\" and {{braces}}");
  CHECK(plain[2].format.empty());  // not a literal: reported, never skipped
  const std::vector<Site> wrapped = scan_file("core/safetensors.cpp", src);
  REQUIRE(wrapped.size() == 4);
  CHECK(wrapped[3].format == "load_safetensors: '{}': wrapped {}");
  CHECK(doc_form("quote \\\" x") == "quote \" x");
  CHECK(fragments("{}: tensor '{}' has {{\"seed\": n}} {:.2f}") ==
        std::vector<std::string>{"", ": tensor '", "' has {\"seed\": n} ", ""});
  CHECK(signature("conv2d: input {} must have non-zero channels, height and width") ==
        "must have non-zero channels, height and width");
  CHECK(signature("fuse_conv_bn: {}({}) uses NHWC") == ") uses NHWC");
  CHECK(signature("--lr: must be positive, got {}") == "--lr: must be positive, got");
  CHECK(signature("{}: '{}': the state is bad, got {}") == "the state is bad, got");
  CHECK(signature("DataLoader: the dataset is empty") == "DataLoader: the dataset is empty");
  CHECK(signature("{}: {}").empty());
  CHECK(signature("load_safetensors: '{}': not a regular file") == "not a regular file");
  CHECK(signature("CifarDataset::{}: index {} out of range") == "out of range");
  CHECK(cells("| a \\| b | `c` |") == std::vector<std::string>{"a | b", "`c`"});
  CHECK(code_spans("`x`, `` y `z` `` and `w`") == std::vector<std::string>{"x", "y `z`", "w"});
}

TEST_CASE("errors catalogue: docs/errors.md lists every fail() message, and only those") {
  const std::vector<Site> sites = scan_sources();
  const Catalogue cat = read_catalogue(slurp(kRoot / "docs/errors.md"));
  REQUIRE(sites.size() > 250);
  REQUIRE(cat.rows.size() > 250);

  std::map<std::string, std::vector<const Site*>> formats;  // doc form -> sites
  for (const Site& s : sites) {
    if (s.format.empty()) {
      // fail()'s own definition takes the format as a parameter.
      if (s.file == "core/error.h") continue;
      FAIL_CHECK(s.file << ":" << s.line << ": the message format is not a string literal, so it cannot be catalogued");
      continue;
    }
    formats[doc_form(s.format)].push_back(&s);
  }

  std::map<std::string, const Row*> rows;
  for (const Row& r : cat.rows) {
    INFO("docs/errors.md:" << r.line << ": " << r.format);
    CHECK_FALSE(r.format.empty());
    CHECK(rows.emplace(r.format, &r).second);  // one row per format
    if (!formats.count(r.format)) FAIL_CHECK("docs/errors.md:" << r.line << ": no fail() in the sources has this format");
  }
  for (const auto& [format, where] : formats)
    if (!rows.count(format))
      FAIL_CHECK(where[0]->file << ":" << where[0]->line << ": this message is not in docs/errors.md: " << format);
}

TEST_CASE("errors catalogue: every test named in docs/errors.md exists and spells out its message") {
  const Catalogue cat = read_catalogue(slurp(kRoot / "docs/errors.md"));
  const auto bodies = test_bodies();
  std::map<std::string, std::string> raw;  // doc form -> the format as the source writes it
  for (const Site& s : scan_sources())
    if (!s.format.empty()) raw[doc_form(s.format)] = s.format;

  int tested = 0, untested = 0;
  std::vector<const Row*> all;
  for (const Row& r : cat.rows) all.push_back(&r);
  for (const Row& r : cat.other_rows) all.push_back(&r);
  for (const Row* r : all) {
    INFO("docs/errors.md:" << r->line << ": test cell '" << r->test_cell << "'");
    if (r->tests.empty()) {
      // Only failures no test can cause on demand (a failing fsync, MPI_Init) go untested, with the reason.
      CHECK(r->test_cell.rfind("not provoked:", 0) == 0);
      ++untested;
      continue;
    }
    ++tested;
    std::string text;  // every named test's body
    for (const std::string& t : r->tests) {
      std::string body;
      if (mpi_case(t, body)) {
        text += body;
        continue;
      }
      auto it = bodies.find(t);
      if (it == bodies.end()) {
        FAIL_CHECK("no TEST_CASE(\"" << t << "\") in tests/*.cpp");
        continue;
      }
      text += it->second;
    }
    if (r->format.empty() || !raw.count(r->format)) continue;
    const std::string piece = signature(raw[r->format]);
    INFO("the named tests must spell out '" << piece << "'");
    CHECK(text.find(piece) != std::string::npos);
  }
  INFO(tested << " rows name a test, " << untested << " cannot be provoked on demand");
  CHECK(tested > 10 * untested);
}
