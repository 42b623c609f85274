// Just enough XML for S3's answers (ListObjectsV2, InitiateMultipartUpload, errors) and for the
// CompleteMultipartUpload body. S3's XML is flat and regular: no CDATA, no comments inside the
// elements we read, and the elements we read never nest in themselves, so a tag scanner is
// correct for it; a general XML parser is not needed.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace cohort::checkpoint::xml {

// The raw inner text of every <tag>...</tag> (or <tag .../>, as "") in document order.
std::vector<std::string> Elements(const std::string& doc, const std::string& tag);

// The first element's inner text, entity-unescaped; nullopt when there is none.
std::optional<std::string> First(const std::string& doc, const std::string& tag);

// Resolves &amp; &lt; &gt; &quot; &apos; and numeric references (&#NN; &#xHH;, as UTF-8).
// Unknown or malformed references are kept as they are.
std::string Unescape(const std::string& text);

// Escapes & < > " ' for text or attribute values.
std::string Escape(const std::string& text);

}  // namespace cohort::checkpoint::xml
