// Standard base64 (RFC 4648, with '=' padding), for the places cohort meets it: kubeconfig's
// *-data fields, Kubernetes Secrets' data, and etcd's JSON gateway (which the tests read with
// curl). Decoding also takes the URL-safe alphabet's - and _.
#pragma once

#include <string>

namespace cohort {

std::string Base64Encode(const std::string& bytes);

// Ignores whitespace (PEM-style line breaks); stops at the first '='. Throws InvalidArgument
// naming `what` when the text has any other character outside the alphabet.
std::string Base64Decode(const std::string& text, const std::string& what);

}  // namespace cohort
