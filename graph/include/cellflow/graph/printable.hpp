// Text from graphs and caches (node ids, params, column names) made safe to
// show: on a terminal, and inside a GraphViz DOT string. Pure functions; safe
// from any thread.
#pragma once

#include <string>
#include <string_view>

namespace cellflow {

/// `text` with control characters (ESC, CR, BEL, DEL...) written as "\x1b"
/// and friends, so that it cannot move a cursor or change colours. Newlines
/// and tabs become spaces when `one_line`, else newlines stay.
std::string printable_text(std::string_view text, bool one_line = true);

/// `text` as the inside of a DOT quoted string: printable_text, then '"' and
/// '\' escaped, so that any id or op keeps the DOT valid and one line per node.
std::string dot_quoted_text(std::string_view text);

}  // namespace cellflow
