#include "checkpoint/store/s3_xml.h"

#include <cstdint>
#include <cstdlib>
#include <utility>

namespace cohort::checkpoint::xml {
namespace {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Parses the reference body between '&' and ';' ("amp", "#60", "#x3C"); false if unknown.
bool Resolve(const std::string& ref, std::string* out) {
  static const std::pair<const char*, char> kNamed[] = {
      {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
  for (const auto& [name, c] : kNamed) {
    if (ref == name) {
      out->push_back(c);
      return true;
    }
  }
  if (ref.size() < 2 || ref[0] != '#') return false;
  bool hex = ref[1] == 'x' || ref[1] == 'X';
  std::string digits = ref.substr(hex ? 2 : 1);
  if (digits.empty() || digits.size() > 8) return false;
  char* end = nullptr;
  unsigned long cp = std::strtoul(digits.c_str(), &end, hex ? 16 : 10);
  if (*end != '\0' || cp > 0x10FFFF) return false;
  AppendUtf8(static_cast<uint32_t>(cp), out);
  return true;
}

}  // namespace

std::vector<std::string> Elements(const std::string& doc, const std::string& tag) {
  std::vector<std::string> out;
  const std::string open = "<" + tag;
  const std::string close = "</" + tag + ">";
  size_t pos = 0;
  while ((pos = doc.find(open, pos)) != std::string::npos) {
    size_t after = pos + open.size();
    // "<Key>" or "<Key attr=...>" or "<Key/>", but not "<KeyCount>".
    if (after >= doc.size() || (doc[after] != '>' && doc[after] != '/' && doc[after] != ' ')) {
      pos = after;
      continue;
    }
    size_t gt = doc.find('>', after);
    if (gt == std::string::npos) break;
    if (doc[gt - 1] == '/') {
      out.emplace_back();
      pos = gt + 1;
      continue;
    }
    size_t end = doc.find(close, gt + 1);
    if (end == std::string::npos) break;
    out.push_back(doc.substr(gt + 1, end - gt - 1));
    pos = end + close.size();
  }
  return out;
}

std::optional<std::string> First(const std::string& doc, const std::string& tag) {
  auto all = Elements(doc, tag);
  if (all.empty()) return std::nullopt;
  return Unescape(all.front());
}

std::string Unescape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '&') {
      size_t semi = text.find(';', i + 1);
      if (semi != std::string::npos && semi - i <= 12 &&
          Resolve(text.substr(i + 1, semi - i - 1), &out)) {
        i = semi;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

std::string Escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

}  // namespace cohort::checkpoint::xml
