// What the reader tests (read_zarr_test.cpp, read_n5_test.cpp) share: fixture
// writers (Python or Node scripts) that print a JSON manifest of what they
// wrote, and the check that damaged inputs are errors naming the file.
// Header-only.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cellflow/cache/error.hpp"
#include "cellflow/graph/value.hpp"
#include "test_util.hpp"

namespace cellflow::test {

/// Runs a fixture writer (`argv`) and parses the JSON manifest it prints
/// (null, with a failure, when it fails).
inline Value manifest_of(const TempDir& tmp, const std::vector<std::string>& argv,
                         const std::string& hint = "") {
  const CommandResult made = run_command(argv, tmp.path());
  EXPECT_EQ(made.exit_code, 0) << describe(made) << hint;
  return made.exit_code == 0 ? parse_json(made.out, "manifest") : Value();
}

/// For each case `name: {"path", "file"}` of `cases` (one per entry of
/// `why`): read(path) throws an Error whose message names `file` and says
/// why.at(name).
inline void expect_errors_name_the_file(const Value& cases,
                                        const std::map<std::string, std::string>& why,
                                        const std::function<void(const std::string&)>& read) {
  ASSERT_EQ(cases.as_object().size(), why.size());
  for (const auto& [name, c] : cases.as_object()) {
    const std::string file = c.find("file")->as_string();
    std::string message;
    try {
      read(c.find("path")->as_string());
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_NE(message.find(file), std::string::npos) << name << ": " << message;
    EXPECT_NE(message.find(why.at(name)), std::string::npos) << name << ": " << message;
  }
}

}  // namespace cellflow::test
