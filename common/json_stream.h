// Cuts a byte stream of concatenated JSON objects ('{...}{...}' or one per line, as a streaming
// HTTP answer such as etcd's /v3/watch delivers them) into whole objects, however the bytes
// arrive in pieces. It only finds where each top-level object ends (braces outside strings,
// escapes in strings); parsing the object is the caller's.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace cohort {

class JsonObjectSplitter {
 public:
  // Takes the next bytes and calls on_object with every top-level object they complete, in
  // order (whitespace between objects is skipped). Stops and returns false as soon as
  // on_object does (the bytes after that object are dropped); else true. Throws DataLoss when
  // something other than whitespace or an object appears at the top level.
  bool Feed(std::string_view data, const std::function<bool(std::string_view)>& on_object);

  // Bytes of an object begun but not yet complete.
  size_t pending() const { return pending_.size(); }

 private:
  std::string pending_;  // the incomplete object so far, from its '{'
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
};

}  // namespace cohort
