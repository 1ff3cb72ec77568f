// The Jinja interpreter against transformers' own renderer: every template of
// tests/reference/fixtures/chat_templates/ (made by tests/reference/make_chat_template_fixtures.py) renders to exactly
// what transformers rendered, raise_exception's message comes through, and constructs outside the subset are refused
// naming the construct and its line and column.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "ranktune/data/data_error.h"
#include "ranktune/data/jinja.h"

namespace ranktune {
namespace {

using json = nlohmann::ordered_json;  // keeps the fixtures' key order, which tojson and printing show
using testing::HasSubstr;
const std::string kDir = std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/chat_templates/";

json load(const std::string& name) {
  std::ifstream in(kDir + name + ".json");
  EXPECT_TRUE(in) << kDir + name + ".json";
  return json::parse(in);
}

JinjaValue from_json(const json& j) {
  if (j.is_null()) return JinjaValue(nullptr);
  if (j.is_boolean()) return JinjaValue(j.get<bool>());
  if (j.is_number_integer()) return JinjaValue(j.get<std::int64_t>());
  if (j.is_number()) return JinjaValue(j.get<double>());
  if (j.is_string()) return JinjaValue(j.get<std::string>());
  if (j.is_array()) {
    JinjaList items;
    for (const json& x : j) items.push_back(from_json(x));
    return JinjaValue::list(std::move(items));
  }
  JinjaDict items;
  for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(it.key(), from_json(it.value()));
  return JinjaValue::dict(std::move(items));
}

// What transformers' render_jinja_template passes: messages, tools, documents, add_generation_prompt, then kwargs.
JinjaDict hf_variables(const json& messages, bool add_generation_prompt, const json& kwargs) {
  JinjaDict vars{{"messages", from_json(messages)},
                 {"tools", JinjaValue(nullptr)},
                 {"documents", JinjaValue(nullptr)},
                 {"add_generation_prompt", JinjaValue(add_generation_prompt)}};
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it) {
    auto same = std::find_if(vars.begin(), vars.end(), [&](const auto& kv) { return kv.first == it.key(); });
    if (same != vars.end()) {
      same->second = from_json(it.value());
    } else {
      vars.emplace_back(it.key(), from_json(it.value()));
    }
  }
  return vars;
}

// `raised`: transformers' error is the template's raise_exception message, which must come through; other errors
// are worded by ranktune.
void expect_renders(const JinjaTemplate& t, const JinjaDict& vars, const json& want, const std::string& what,
                    bool raised) {
  if (want.contains("rendered")) {
    try {
      EXPECT_EQ(t.render(vars), want["rendered"].get<std::string>()) << what;
    } catch (const DataError& e) {
      ADD_FAILURE() << what << ": " << e.what();
    }
    return;
  }
  const std::string error = want["error"].get<std::string>();
  try {
    const std::string got = t.render(vars);
    ADD_FAILURE() << what << ": rendered " << json(got).dump() << " where transformers raised: " << error;
  } catch (const DataError& e) {
    if (raised) {
      EXPECT_THAT(e.what(), HasSubstr(error)) << what;
    }
  }
}

TEST(Jinja, FeaturesRenderAsTransformers) {
  const json cases = load("features")["cases"];
  ASSERT_GE(cases.size(), 30u);
  int i = 0;
  for (const json& c : cases) {
    const std::string tmpl = c["template"].get<std::string>();
    const bool raises = tmpl.find("raise_exception") != std::string::npos;
    const JinjaTemplate t(tmpl, "feature " + std::to_string(i));
    expect_renders(t, hf_variables(c["messages"], false, c["variables"]), c,
                   "feature " + std::to_string(i++) + " " + json(tmpl).dump(), raises);
  }
}

class FamilyTemplate : public testing::TestWithParam<std::string> {};

TEST_P(FamilyTemplate, RendersAsTransformers) {
  const json f = load(GetParam());
  const JinjaTemplate t(f["template"].get<std::string>(), GetParam());
  int n = 0;
  for (const json& r : f["renders"]) {
    json kwargs = f["special_tokens"];
    if (r.contains("variables")) kwargs.update(r["variables"]);
    const bool gen = r["add_generation_prompt"].get<bool>();
    expect_renders(t, hf_variables(r["messages"], gen, kwargs), r,
                   GetParam() + " render " + std::to_string(n++) + (gen ? " (generation prompt)" : ""), true);
  }
  EXPECT_GE(n, 20);
}

INSTANTIATE_TEST_SUITE_P(Templates, FamilyTemplate,
                         testing::Values("llama3", "llama3_1", "llama2", "mistral", "mistral_v3", "qwen2", "qwen2_5",
                                         "chatml", "zephyr", "gemma", "gemma3"));

std::string refusal(const std::string& tmpl, const JinjaDict& vars = {}) {
  try {
    JinjaTemplate(tmpl, "t.jinja").render(vars);
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Jinja, RefusesConstructsOutsideTheSubsetByName) {
  EXPECT_THAT(refusal("{% macro f(x) %}{{ x }}{% endmacro %}"), HasSubstr("{% macro %} is not supported"));
  EXPECT_THAT(refusal("ab\n  {% include 'other.jinja' %}"),
              testing::AllOf(HasSubstr("t.jinja line 2, column 3"), HasSubstr("{% include %} is not supported")));
  EXPECT_THAT(refusal("{% call f() %}x{% endcall %}"), HasSubstr("{% call %}"));
  EXPECT_THAT(refusal("{% raw %}{{ x }}{% endraw %}"), HasSubstr("{% raw %}"));
  EXPECT_THAT(refusal("{% filter upper %}x{% endfilter %}"), HasSubstr("{% filter %}"));
  EXPECT_THAT(refusal("{% with a = 1 %}{% endwith %}"), HasSubstr("{% with %}"));
  EXPECT_THAT(refusal("{{ x | wordwrap(3) }}"),
              testing::AllOf(HasSubstr("line 1, column 8"), HasSubstr("the filter 'wordwrap' is not supported")));
  EXPECT_THAT(refusal("{% if x is escaped %}{% endif %}"), HasSubstr("the test 'escaped' is not supported"));
  EXPECT_THAT(refusal("{% for x in y recursive %}{% endfor %}"), HasSubstr("a recursive for loop"));
  EXPECT_THAT(refusal("{{ f(*args) }}"), HasSubstr("*args and **kwargs"));
  EXPECT_THAT(refusal("{% frobnicate %}"), HasSubstr("the tag 'frobnicate' is not supported"));
  // Refused when evaluated: what a filter or method does depends on the value.
  EXPECT_THAT(refusal("{{ '%s' % 1 }}"), HasSubstr("printf-style string formatting"));
  EXPECT_THAT(refusal("{{ 'x'.format(1) }}"), HasSubstr("the string method format()"));
  EXPECT_THAT(refusal("{{ m.update({}) }}", {{"m", JinjaValue::dict({})}}), HasSubstr("dict method update()"));
  EXPECT_THAT(refusal("{{ m.append(1) }}", {{"m", JinjaValue::list({})}}), HasSubstr("list method append()"));
  EXPECT_THAT(refusal("{{ 'é' | upper }}"), HasSubstr("upper of text with non-ASCII letters"));
  EXPECT_THAT(refusal("{% for i in [1] %}{{ loop.cycle('a', 'b') }}{{ loop.changed(i) }}{% endfor %}"),
              HasSubstr("loop.changed is not supported"));
}

TEST(Jinja, SyntaxAndRuntimeErrorsNameThePlace) {
  EXPECT_THAT(refusal("{{ x "), HasSubstr("missing '}}'"));
  EXPECT_THAT(refusal("a\n{% if x %}b"), HasSubstr("the template ends before 'elif' or 'else' or 'endif'"));
  EXPECT_THAT(refusal("{% endfor %}"), HasSubstr("unexpected 'endfor'"));
  EXPECT_THAT(refusal("{% break %}"), HasSubstr("'break' outside a for loop"));
  EXPECT_THAT(refusal("{{ (1 }}"), HasSubstr("template syntax error"));
  EXPECT_THAT(refusal("{# never closed"), HasSubstr("missing end of comment tag"));
  EXPECT_THAT(refusal("\n\n   {{ message.tool_calls[0].name }}", {{"message", JinjaValue::dict({})}}),
              testing::AllOf(HasSubstr("t.jinja line 3, column 14"), HasSubstr("'message.tool_calls' is undefined")));
  EXPECT_THAT(refusal("{{ raise_exception('Roles must alternate') }}"),
              testing::AllOf(HasSubstr("the chat template refused the conversation: Roles must alternate")));
  EXPECT_THAT(refusal("{{ 1 // 0 }}"), HasSubstr("division or modulo by zero"));
}

TEST(Jinja, GlobalsOfTransformersEnvironment) {
  const std::string year = JinjaTemplate("{{ strftime_now('%Y') }}", "t").render({});
  ASSERT_EQ(year.size(), 4u);
  EXPECT_GE(std::stoi(year), 2024);
  EXPECT_EQ(JinjaTemplate("{{ namespace({'a': 1}, b=2).b }}{{ dict(x=1).x }}", "t").render({}), "21");
  // A value set in a loop is gone after it; a namespace carries it out.
  EXPECT_EQ(JinjaTemplate("{% set n = 0 %}{% for i in [1] %}{% set n = 5 %}{% endfor %}{{ n }}", "t").render({}), "0");
}

}  // namespace
}  // namespace ranktune
