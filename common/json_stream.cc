#include "common/json_stream.h"

#include "common/error.h"

namespace cohort {

bool JsonObjectSplitter::Feed(std::string_view data,
                              const std::function<bool(std::string_view)>& on_object) {
  for (size_t i = 0; i < data.size(); ++i) {
    const char c = data[i];
    if (depth_ == 0) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
      if (c != '{') {
        throw DataLoss(std::string("a stream of JSON objects has '") + c +
                       "' between objects: " + std::string(data.substr(i, 80)));
      }
    }
    pending_ += c;
    if (in_string_) {
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if ((c == '}' || c == ']') && --depth_ == 0) {
      std::string object;
      object.swap(pending_);
      if (!on_object(object)) return false;
    }
  }
  return true;
}

}  // namespace cohort
