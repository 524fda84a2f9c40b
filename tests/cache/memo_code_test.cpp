// Memo's code rule (Memo::set_key_by_code): a memoized function whose body is
// edited computes anew on the next call, a rebuild of the same source does
// not. Three builds of tests/cache/memo_code_program.cpp share one cache:
// "same" and "same_again" compile the same body, "edited" the edited one.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "cellflow/cache/code_identity.hpp"
#include "cellflow/cache/memoize.hpp"
#include "test_util.hpp"

namespace cellflow {
namespace {

namespace fs = std::filesystem;

struct ProgramRun {
  long long value = 0;
  std::string how;  // "cached" or "computed"
  std::string key;
};

ProgramRun run_program(const char* program, const fs::path& dir, const std::string& x,
                       bool by_version = false) {
  std::vector<std::string> argv{program, (dir / "cache").string(), x};
  if (by_version) argv.emplace_back("--by-version");
  const test::CommandResult r = test::run_command(argv, dir);
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  ProgramRun run;
  std::istringstream(r.out) >> run.value >> run.how >> run.key;
  return run;
}

TEST(MemoCodeTest, EditedBodyComputesAnewSameSourceRebuiltDoesNot) {
  test::TempDir tmp;
  const ProgramRun first = run_program(CELLFLOW_MEMO_SAME, tmp.path(), "7");
  EXPECT_EQ(first.value, 14);
  EXPECT_EQ(first.how, "computed");
  EXPECT_EQ(run_program(CELLFLOW_MEMO_SAME, tmp.path(), "7").how, "cached");

  // Another program compiled and linked from the same source: same bytes,
  // same build-id, same key.
  const ProgramRun again = run_program(CELLFLOW_MEMO_SAME_AGAIN, tmp.path(), "7");
  EXPECT_EQ(again.how, "cached");
  EXPECT_EQ(again.key, first.key);

  // The body edited, id and version unchanged: computed anew, new result.
  const ProgramRun edited = run_program(CELLFLOW_MEMO_EDITED, tmp.path(), "7");
  EXPECT_EQ(edited.value, 21);
  EXPECT_EQ(edited.how, "computed");
  EXPECT_NE(edited.key, first.key);
  EXPECT_EQ(run_program(CELLFLOW_MEMO_EDITED, tmp.path(), "7").how, "cached");

  // Both entries stay: going back to the old build loads the old result.
  const ProgramRun back = run_program(CELLFLOW_MEMO_SAME, tmp.path(), "7");
  EXPECT_EQ(back.value, 14);
  EXPECT_EQ(back.how, "cached");
}

TEST(MemoCodeTest, KeyedByVersionOnlyTheEditIsNotSeen) {
  // What set_key_by_code(false) trades away: the stale result comes back.
  test::TempDir tmp;
  const ProgramRun first = run_program(CELLFLOW_MEMO_SAME, tmp.path(), "5", true);
  EXPECT_EQ(first.value, 10);
  EXPECT_EQ(first.how, "computed");
  const ProgramRun edited = run_program(CELLFLOW_MEMO_EDITED, tmp.path(), "5", true);
  EXPECT_EQ(edited.how, "cached");
  EXPECT_EQ(edited.value, 10) << "keyed by version only, the edited body is not run";
  EXPECT_EQ(edited.key, first.key);
}

int64_t twice(int64_t x) { return 2 * x; }

// Computed outside cellflow (xxhash's XXH3_128bits on the text below, high
// 64 bits first) from the key text of the commit before the code rule.
constexpr const char* kPinnedKey = "799e049f0d528205cfd2e5df9f48af9a";

TEST(MemoCodeTest, KeyWithoutCodeIsUnchangedAndCodeIsRecorded) {
  // The key format of entries made before the code rule (or with it off) is
  // pinned: XXH3-128 of "cellflow-memo 1\nfunction f\nversion 1\nresult l\n".
  detail::MemoCall call;
  call.function = "f";
  call.version = 1;
  call.result_type = "l";
  EXPECT_EQ(memo_key(call), kPinnedKey);
  call.code = "0123abcd";
  EXPECT_NE(memo_key(call), kPinnedKey);

  test::TempDir tmp;
  Memo memo(tmp / "cache");
  EXPECT_TRUE(memo.key_by_code());
  const auto with_code = memo.call_with_outcome("twice", 1, twice, int64_t{4});
  const std::optional<CodeIdentity> here = code_identity_of(detail::code_address(twice));
  ASSERT_TRUE(here.has_value());
  ASSERT_FALSE(here->build_id.empty()) << "this test binary has no build-id";
  const std::string record = test::read_all(with_code.outcome.entry / "entry.json");
  EXPECT_NE(record.find(here->build_id), std::string::npos) << record;

  memo.set_key_by_code(false);
  const auto without = memo.call_with_outcome("twice", 1, twice, int64_t{4});
  EXPECT_FALSE(without.outcome.cached) << "a different key";
  EXPECT_NE(without.outcome.key, with_code.outcome.key);
  EXPECT_EQ(test::read_all(without.outcome.entry / "entry.json").find("build_id"),
            std::string::npos);
}

}  // namespace
}  // namespace cellflow
