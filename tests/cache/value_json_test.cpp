// Value and its JSON forms: parsing (with line:col errors), pretty and compact
// writing, round trips, and the canonical form used for hashing.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "cellflow/cache/error.hpp"
#include "cellflow/cache/value.hpp"

namespace cellflow {
namespace {

TEST(Value, KindsAndAccessors) {
  EXPECT_TRUE(Value().is_null());
  EXPECT_TRUE(Value(nullptr).is_null());
  EXPECT_TRUE(Value(true).is_bool());
  EXPECT_TRUE(Value(3).is_int());
  EXPECT_TRUE(Value(int64_t{1} << 40).is_int());
  EXPECT_TRUE(Value(2.5).is_float());
  EXPECT_TRUE(Value("s").is_string());
  EXPECT_TRUE(Value::array().is_array());
  EXPECT_TRUE(Value::object().is_object());
  EXPECT_EQ(Value(3).as_double(), 3.0);
  EXPECT_EQ(Value(3).as_int(), 3);
  EXPECT_THROW(Value("x").as_int(), InvalidArgument);
  EXPECT_THROW(Value(2.5).as_int(), InvalidArgument);
  EXPECT_THROW(Value(1).as_string(), InvalidArgument);
  EXPECT_THROW(Value(1).as_array(), InvalidArgument);
  EXPECT_EQ(Value(1).kind_name(), "integer");
  EXPECT_EQ(Value("a").kind_name(), "string");
  EXPECT_FALSE(Value(2) == Value(2.0));  // kinds differ
}

TEST(Value, ObjectKeepsInsertionOrderAndSetReplacesInPlace) {
  Value o = Value::object();
  o.set("b", 1);
  o.set("a", 2);
  o.set("c", 3);
  o.set("a", 20);
  ASSERT_EQ(o.as_object().size(), 3u);
  EXPECT_EQ(o.as_object()[0].first, "b");
  EXPECT_EQ(o.as_object()[1].first, "a");
  EXPECT_EQ(o.as_object()[1].second, Value(20));
  EXPECT_EQ(o.as_object()[2].first, "c");
  ASSERT_NE(o.find("c"), nullptr);
  EXPECT_EQ(*o.find("c"), Value(3));
  EXPECT_EQ(o.find("zz"), nullptr);
  EXPECT_EQ(Value(1).find("a"), nullptr);
  EXPECT_EQ(to_json_compact(o), R"({"b":1,"a":20,"c":3})");
}

TEST(Json, ParsesAllKinds) {
  const Value v =
      parse_json(R"( {"n": null, "t": true, "f": false, "i": -42, "big": 9007199254740993,
      "x": 1.5e3, "s": "a\"b\\c\n\u00e9\ud83d\ude00", "arr": [1, [2, {}], []], "o": {"k": "v"}} )");
  ASSERT_TRUE(v.is_object());
  EXPECT_TRUE(v.find("n")->is_null());
  EXPECT_EQ(v.find("t")->as_bool(), true);
  EXPECT_EQ(v.find("f")->as_bool(), false);
  EXPECT_EQ(v.find("i")->as_int(), -42);
  EXPECT_TRUE(v.find("big")->is_int());
  EXPECT_EQ(v.find("big")->as_int(), 9007199254740993LL);  // not rounded through double
  EXPECT_TRUE(v.find("x")->is_float());
  EXPECT_EQ(v.find("x")->as_double(), 1500.0);
  EXPECT_EQ(v.find("s")->as_string(), "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v.find("arr")->as_array().size(), 3u);
  EXPECT_EQ(v.find("o")->find("k")->as_string(), "v");
}

// The error names source:line:col of the offending character.
void expect_parse_error(const std::string& text, const std::string& where) {
  try {
    parse_json(text, "graph.json");
    ADD_FAILURE() << "parsed: " << text;
  } catch (const GraphError& e) {
    EXPECT_NE(std::string(e.what()).find("graph.json:" + where), std::string::npos)
        << "expected graph.json:" << where << " in: " << e.what();
  }
}

TEST(Json, ErrorsNameLineAndColumn) {
  expect_parse_error("{\"a\": 1,\n  \"b\": ]\n}", "2:8");
  expect_parse_error("{\"a\": 1 \"b\": 2}", "1:9");
  expect_parse_error("[1, 2", "1:6");
  expect_parse_error("{\n\n   \"a\" 1}", "3:8");
  expect_parse_error("{\"a\": tru}", "1:7");
  expect_parse_error("{\"a\": 1} x", "1:10");
  expect_parse_error("\"unterminated", "1:");
  expect_parse_error("{\"a\": 1, \"a\": 2}", "1:");  // duplicate key
  expect_parse_error("", "1:1");
  expect_parse_error("{\"a\": NaN}", "1:7");
}

// The message of the GraphError parse_json throws on `text`, or "" if it parsed.
std::string parse_error(const std::string& text) {
  try {
    parse_json(text, "graph.json");
  } catch (const GraphError& e) {
    return e.what();
  }
  return "";
}

TEST(Json, NumbersFollowRfc8259) {
  EXPECT_EQ(parse_json("0"), Value(0));
  EXPECT_EQ(parse_json("-0"), Value(0));
  EXPECT_EQ(parse_json("0.5"), Value(0.5));
  EXPECT_EQ(parse_json("-0.5"), Value(-0.5));
  EXPECT_EQ(parse_json("1e5"), Value(1e5));
  EXPECT_EQ(parse_json("1E-5"), Value(1e-5));
  EXPECT_EQ(parse_json("-1.5e+3"), Value(-1500.0));
  EXPECT_EQ(parse_json("0e0"), Value(0.0));
  EXPECT_EQ(parse_json("10"), Value(10));
  EXPECT_EQ(parse_json("[0,-0.0,10.25]"), parse_json("[0, -0.0, 10.25]"));
  // Beyond int64 it is still a number, read as a double.
  EXPECT_TRUE(parse_json("18446744073709551616").is_float());

  for (const char* bad : {"01", "-01", "00", "1.", "-1.", "1.e5", ".5", "-.5", "+1", "1e", "1e+",
                          "1E-", "-", "--1", "1e400"}) {
    SCOPED_TRACE(bad);
    const std::string what = parse_error(bad);
    EXPECT_NE(what.find("graph.json:1:1: invalid JSON: bad number"), std::string::npos) << what;
  }
  // Inside a document the error points at the number and says what was expected.
  EXPECT_EQ(parse_error("{\"sigma\": 01}"),
            "graph.json:1:11: invalid JSON: bad number \"01\": leading zeros are not allowed");
  EXPECT_EQ(parse_error("[1.]"),
            "graph.json:1:2: invalid JSON: bad number \"1.\": expected a digit after '.'");
  EXPECT_EQ(parse_error("[1e+]"),
            "graph.json:1:2: invalid JSON: bad number \"1e+\": expected a digit in the exponent");
  EXPECT_EQ(parse_error("[-]"),
            "graph.json:1:2: invalid JSON: bad number \"-\": expected a digit after '-'");
  EXPECT_EQ(parse_error("[.5]"),
            "graph.json:1:2: invalid JSON: bad number \".5\": a number "
            "starts with '-' or a digit");
  EXPECT_EQ(parse_error("[+1]"),
            "graph.json:1:2: invalid JSON: bad number \"+1\": a number "
            "starts with '-' or a digit");
  // What follows a complete number is the container's business.
  EXPECT_EQ(parse_error("[0x10]"), "graph.json:1:3: invalid JSON: expected ',' or ']' in an array");
  EXPECT_EQ(parse_error("1e5.0"),
            "graph.json:1:4: invalid JSON: unexpected text after the JSON value");
}

TEST(Json, StringsFollowRfc8259) {
  // Raw control characters must be escaped; DEL and UTF-8 need not be.
  EXPECT_EQ(parse_error("[\"a\tb\"]"),
            "graph.json:1:4: invalid JSON: control character 0x09 in a string (write it as an "
            "escape, e.g. \\n or \\u0009)");
  EXPECT_EQ(parse_error(std::string("\"a\0b\"", 5)).find("graph.json:1:3: invalid JSON: control"),
            0u);
  EXPECT_EQ(parse_json("\"\x7f\xc3\xa9\""), Value("\x7f\xc3\xa9"));

  EXPECT_EQ(
      parse_error(R"(["\x41"])"),
      R"(graph.json:1:3: invalid JSON: bad escape '\x' (expected one of \" \\ \/ \b \f \n \r \t \uXXXX))");
  EXPECT_NE(parse_error(R"(["\u12G4"])").find("bad hex digit in \\u escape"), std::string::npos);
  EXPECT_NE(parse_error(R"(["\u12"])").find("invalid JSON:"), std::string::npos);
  EXPECT_EQ(parse_json(R"("\/\b\f\r\u0041\u00e9\u20AC")"), Value("/\b\f\rA\xc3\xa9\xe2\x82\xac"));

  // Surrogates come in pairs; a lone one has no UTF-8 form.
  EXPECT_EQ(parse_json(R"("\uD83D\uDE00")"), Value("\xf0\x9f\x98\x80"));
  EXPECT_EQ(
      parse_error(R"(["\uD83D"])"),
      R"(graph.json:1:9: invalid JSON: lone high surrogate \uD83D (expected a low surrogate \uDC00-\uDFFF after it))");
  EXPECT_EQ(parse_error(R"(["\uD83Dx"])").find("graph.json:1:9: invalid JSON: lone high surrogate"),
            0u);
  EXPECT_EQ(
      parse_error(R"(["\uD83D\u0041"])"),
      R"(graph.json:1:9: invalid JSON: expected a low surrogate \uDC00-\uDFFF after \uD83D (got \u0041))");
  EXPECT_EQ(parse_error(R"(["\uD83D\uD83D"])").find("graph.json:1:9: invalid JSON: expected a low"),
            0u);
  EXPECT_EQ(
      parse_error(R"(["\uDE00"])"),
      R"(graph.json:1:3: invalid JSON: lone low surrogate \uDE00 (expected a high surrogate \uD800-\uDBFF before it))");

  // JSON text is UTF-8: stray continuation bytes, overlong forms, encoded surrogates
  // and truncated sequences are errors.
  for (const char* bad : {"\"\x80\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"",
                          "\"\xf4\x90\x80\x80\"", "\"\xc3\"", "\"\xe2\x82\"", "\"\xff\""}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(parse_error(bad).find("graph.json:1:2: invalid JSON: invalid UTF-8 in a string"), 0u)
        << parse_error(bad);
  }
  EXPECT_EQ(parse_json("\"\xf4\x8f\xbf\xbf\""), Value("\xf4\x8f\xbf\xbf"));  // U+10FFFF
}

TEST(Json, RejectsTrailingCommasAndTrailingText) {
  EXPECT_EQ(
      parse_error("[1, 2,]"),
      "graph.json:1:7: invalid JSON: expected a value after ',' (no trailing commas in JSON)");
  EXPECT_EQ(parse_error("{\"a\": 1,\n}"),
            "graph.json:2:1: invalid JSON: expected a quoted key after ',' (no trailing commas in "
            "JSON)");
  EXPECT_NE(parse_error("[,]").find("graph.json:1:2:"), std::string::npos);
  EXPECT_NE(parse_error("{,}").find("graph.json:1:2:"), std::string::npos);
  EXPECT_EQ(parse_error("{} {}"),
            "graph.json:1:4: invalid JSON: unexpected text after the JSON value");
  EXPECT_EQ(parse_error("1 2"),
            "graph.json:1:3: invalid JSON: unexpected text after the JSON value");
  EXPECT_EQ(parse_error("truex"),
            "graph.json:1:5: invalid JSON: unexpected text after the JSON value");
  EXPECT_EQ(parse_json(" \t\r\n[] \n"), Value::array());  // whitespace around the value is fine
}

// to_json's layout, spelled out: short values on one line with ", " and ": ", longer
// ones broken per item, flat arrays on one line whatever their length.
TEST(Json, PrettyLayout) {
  Value::Array long_flat;
  for (int i = 0; i < 40; ++i) long_flat.emplace_back(1000 + i);
  Value v(Value::Object{
      {"short", parse_json(R"({"a": [1, 2], "b": {"c": null}})")},
      {"long", Value(Value::Object{{"k", Value(std::string(90, 'x'))}, {"e", Value::object()}})},
      {"flat", Value(long_flat)}});
  std::string flat_line = "[";
  for (int i = 0; i < 40; ++i) flat_line += (i ? ", " : "") + std::to_string(1000 + i);
  flat_line += "]";
  EXPECT_EQ(to_json(v),
            "{\n"
            "  \"short\": {\"a\": [1, 2], \"b\": {\"c\": null}},\n"
            "  \"long\": {\n"
            "    \"k\": \"" +
                std::string(90, 'x') +
                "\",\n"
                "    \"e\": {}\n"
                "  },\n"
                "  \"flat\": " +
                flat_line +
                "\n"
                "}\n");
  EXPECT_EQ(to_json_compact(v.as_object()[0].second), R"({"a":[1,2],"b":{"c":null}})");
  EXPECT_EQ(to_json(Value(1)), "1\n");
  EXPECT_EQ(to_json(Value::array()), "[]\n");
}

TEST(Json, PrettyRoundTripIsByteIdentical) {
  const std::string text = R"({
  "cellflow": 1,
  "name": "x",
  "nodes": [
    {"id": "raw", "op": "synthetic.blobs", "params": {"shape": [64, 64], "cell_shape": [32, 32], "seed": 1}},
    {"id": "smooth", "op": "gaussian", "inputs": ["raw"], "params": {"sigma": 2.0}}
  ],
  "values": [0.1, 1e-10, 123456789012, -0.0, 3.141592653589793, "é\t"]
})";
  const Value v = parse_json(text);
  const std::string once = to_json(v);
  const std::string twice = to_json(parse_json(once));
  EXPECT_EQ(once, twice);
  EXPECT_EQ(parse_json(once), v);
  EXPECT_EQ(parse_json(to_json_compact(v)), v);
  EXPECT_EQ(once.back(), '\n');
  // Floats survive exactly.
  const Value reparsed = parse_json(once);
  const Value* vals = reparsed.find("values");
  ASSERT_NE(vals, nullptr);
  EXPECT_EQ(vals->as_array()[0].as_double(), 0.1);
  EXPECT_EQ(vals->as_array()[1].as_double(), 1e-10);
  EXPECT_TRUE(vals->as_array()[2].is_int());
  EXPECT_EQ(vals->as_array()[4].as_double(), 3.141592653589793);
}

TEST(Json, FloatsStayFloats) {
  // A float that happens to be integral is written with a decimal point so it
  // reads back as a float.
  EXPECT_EQ(to_json_compact(Value(2.0)), "2.0");
  EXPECT_TRUE(parse_json(to_json_compact(Value(2.0))).is_float());
  EXPECT_TRUE(parse_json(to_json_compact(Value(1e300))).is_float());
  EXPECT_EQ(to_json_compact(Value(2)), "2");
  EXPECT_THROW(to_json(Value(std::numeric_limits<double>::infinity())), InvalidArgument);
  EXPECT_THROW(to_json(Value(std::nan(""))), InvalidArgument);
}

TEST(Json, CanonicalFormIgnoresKeyOrderAndWhitespace) {
  const Value a = parse_json(R"({"b": {"y": [1, 2.5], "x": "s"}, "a": 1, "c": null})");
  const Value b =
      parse_json("{\n  \"a\":1,\n\t\"c\" : null ,\"b\":{\"x\":\"s\",\n \"y\":[ 1 ,2.5 ]}}");
  EXPECT_FALSE(a == b);                                   // insertion order differs...
  EXPECT_EQ(to_canonical_json(a), to_canonical_json(b));  // ...the canonical form does not
  EXPECT_EQ(to_canonical_json(a), R"({"a":1,"b":{"x":"s","y":[1,2.5]},"c":null})");
  // Array order matters; values matter.
  EXPECT_NE(to_canonical_json(parse_json("[1,2]")), to_canonical_json(parse_json("[2,1]")));
  EXPECT_NE(to_canonical_json(parse_json(R"({"a":1})")),
            to_canonical_json(parse_json(R"({"a":1.0})")));
  EXPECT_NE(to_canonical_json(parse_json(R"({"a":"1"})")),
            to_canonical_json(parse_json(R"({"a":1})")));
}

TEST(Json, EscapesControlCharacters) {
  const Value v(
      std::string("a\x01"
                  "b\"\\\n"));
  const std::string s = to_json_compact(v);
  EXPECT_EQ(s.find('\x01'), std::string::npos) << s;
  EXPECT_EQ(parse_json(s), v);
}

}  // namespace
}  // namespace cellflow
