// Standard base64 (RFC 4648, with '=' padding), for the places cohort meets it: kubeconfig's
// *-data fields and Kubernetes Secrets' data.
#pragma once

#include <string>

namespace cohort {

std::string Base64Encode(const std::string& bytes);

// Ignores whitespace (PEM-style line breaks); stops at the first '='. Throws InvalidArgument
// naming `what` when the text has any other character outside the alphabet.
std::string Base64Decode(const std::string& text, const std::string& what);

}  // namespace cohort
