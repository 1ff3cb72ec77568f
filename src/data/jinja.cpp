// The Jinja subset of chat templates in three steps: a lexer that cuts the source into text and tags and applies
// whitespace control exactly as Jinja's lexer does (the "-" markers, trim_blocks, lstrip_blocks, the dropped final
// newline), a recursive-descent parser to an AST with Jinja's operator precedence, and a tree-walking evaluator with
// Python's semantics for the values templates use. Where Python or Jinja behave in a way that is easy to get wrong,
// the comment says which behaviour is reproduced; tests/data/test_jinja.cpp checks renderings against jinja2.
// The steps live in jinja_lexer.cpp, jinja_parser.cpp and jinja_render.cpp, values in jinja_value.cpp; this file
// is the public JinjaTemplate.
#include "ranktune/data/jinja.h"

#include "jinja_internal.h"
#include "ranktune/data/unicode.h"

namespace ranktune {

using namespace jinja_detail;

struct JinjaTemplate::Impl {
  Source src;
  Body body;
};

JinjaTemplate::JinjaTemplate(std::string_view source, std::string origin) : impl_(std::make_unique<Impl>()) {
  impl_->src.origin = std::move(origin);
  utf8_validate(source, "chat template");
  impl_->src.text = normalize_newlines(source);
  const std::vector<Chunk> chunks = lex(impl_->src);
  impl_->body = parse_template(impl_->src, chunks);
}

JinjaTemplate::~JinjaTemplate() = default;
JinjaTemplate::JinjaTemplate(JinjaTemplate&&) noexcept = default;
JinjaTemplate& JinjaTemplate::operator=(JinjaTemplate&&) noexcept = default;

const std::string& JinjaTemplate::origin() const { return impl_->src.origin; }

std::string JinjaTemplate::render(const JinjaDict& variables) const {
  Scope root;
  for (const auto& [name, value] : variables) root.set(name, value);
  std::string out;
  render_template(impl_->src, impl_->body, root, out);
  return out;
}

}  // namespace ranktune
