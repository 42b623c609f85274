#include "common/http.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <random>
#include <thread>

#include "common/error.h"
#include "common/log.h"

namespace cohort::http {

struct Client::Attempt {
  CURLcode code = CURLE_OK;
  char error[CURL_ERROR_SIZE] = {0};
  Response response;
  const Request* request = nullptr;
  size_t read_offset = 0;  // into request->body, for uploads
  // Stream: where a 2xx body goes, and the transfer's whole limit in ms.
  const std::function<bool(std::string_view)>* on_data = nullptr;
  long stream_timeout_ms = 0;
  long status_seen = 0;           // from the last status line, while the transfer runs
  bool stopped = false;           // on_data returned false or threw
  std::exception_ptr data_error;  // what on_data threw
};

namespace {

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* attempt = static_cast<Client::Attempt*>(user);
  if (attempt->on_data == nullptr || attempt->status_seen / 100 != 2) {
    attempt->response.body.append(data, size * n);
    return size * n;
  }
  try {
    if ((*attempt->on_data)(std::string_view(data, size * n))) return size * n;
  } catch (...) {
    attempt->data_error = std::current_exception();
  }
  attempt->stopped = true;
  return 0;  // curl ends the transfer with CURLE_WRITE_ERROR
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* attempt = static_cast<Client::Attempt*>(user);
  auto* response = &attempt->response;
  std::string line(data, size * n);
  // A new status line (after 100 Continue or a redirect) starts a new header block.
  if (line.rfind("HTTP/", 0) == 0) {
    response->headers.clear();
    const size_t space = line.find(' ');
    attempt->status_seen = space == std::string::npos ? 0 : std::atol(line.c_str() + space + 1);
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  size_t begin = line.find_first_not_of(" \t", colon + 1);
  size_t end = line.find_last_not_of(" \t\r\n");
  response->headers[name] =
      begin == std::string::npos || end < begin ? "" : line.substr(begin, end - begin + 1);
  // Avoid regrowing large bodies (a HEAD's length is the resource's, with no body to hold).
  if (name == "content-length" && attempt->request->method != "HEAD")
    response->body.reserve(std::strtoull(response->headers[name].c_str(), nullptr, 10));
  return size * n;
}

size_t OnRead(char* buffer, size_t size, size_t n, void* user) {
  auto* attempt = static_cast<Client::Attempt*>(user);
  size_t left = attempt->request->body_size - attempt->read_offset;
  size_t take = std::min(left, size * n);
  if (take > 0) std::memcpy(buffer, attempt->request->body + attempt->read_offset, take);
  attempt->read_offset += take;
  return take;
}

int OnSeek(void* user, curl_off_t offset, int origin) {
  auto* attempt = static_cast<Client::Attempt*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<size_t>(offset) > attempt->request->body_size)
    return CURL_SEEKFUNC_FAIL;
  attempt->read_offset = static_cast<size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

// Aborts a transfer in flight once the caller's `cancelled` says so (curl polls this about once
// a second, and on every chunk), so a slow server cannot hold a closing caller.
int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* cancelled = static_cast<const std::function<bool()>*>(user);
  return (*cancelled)() ? 1 : 0;
}

// Transport errors that another attempt cannot fix.
bool RetryableCurl(CURLcode code) {
  switch (code) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_NOT_BUILT_IN:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_LOGIN_DENIED:
      return false;
    default:
      return true;
  }
}

std::string PathOf(const std::string& target) { return target.substr(0, target.find('?')); }

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Sleeps `seconds` in short slices; false when `cancelled` said stop first.
bool SleepUnlessCancelled(double seconds, const std::function<bool()>& cancelled) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                     std::chrono::duration<double>(seconds));
  while (Clock::now() < until) {
    if (cancelled && cancelled()) return false;
    Clock::duration left = until - Clock::now();
    std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(20)));
  }
  return !(cancelled && cancelled());
}

}  // namespace

Auth Auth::Bearer(std::string token) {
  Auth a;
  a.kind = Kind::kBearer;
  a.token = std::move(token);
  return a;
}

Auth Auth::Basic(std::string user, std::string password) {
  Auth a;
  a.kind = Kind::kBasic;
  a.user = std::move(user);
  a.password = std::move(password);
  return a;
}

Auth Auth::AwsSigV4(std::string key_id, std::string secret, std::string provider) {
  Auth a;
  a.kind = Kind::kAwsSigV4;
  a.user = std::move(key_id);
  a.password = std::move(secret);
  a.sigv4 = std::move(provider);
  return a;
}

std::string Response::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

double ParseRetryAfter(const std::string& value) {
  if (value.empty()) return -1;
  char* end = nullptr;
  double s = std::strtod(value.c_str(), &end);
  if (end != value.c_str() && *end == '\0') return s >= 0 ? s : -1;
  time_t when = curl_getdate(value.c_str(), nullptr);  // an HTTP date
  if (when < 0) return -1;
  return std::max(0.0, std::difftime(when, std::time(nullptr)));
}

double BackoffSeconds(const Options& o, int retry, double retry_after_s) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  double step = std::min(o.backoff_max_s,
                         o.backoff_initial_s * static_cast<double>(1 << std::min(retry, 20)));
  double s = step / 2 + std::uniform_real_distribution<double>(0, step / 2)(rng);
  if (retry_after_s >= 0) s = std::max(s, std::min(retry_after_s, o.max_retry_after_s));
  return s;
}

std::string OneLine(std::string text, size_t max_chars) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  if (text.size() > max_chars) text = text.substr(0, max_chars) + "...";
  return text;
}

std::string UriEncode(const std::string& text, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (c == '/' && keep_slash)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Client::Client(std::string base_url, Auth auth, Options options)
    : base_url_(std::move(base_url)), auth_(std::move(auth)), options_(std::move(options)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
  if (base_url_.rfind("http://", 0) != 0 && base_url_.rfind("https://", 0) != 0)
    throw InvalidArgument(fmt::format("{} URL '{}' must start with http:// or https://",
                                      options_.service, base_url_));
  if (options_.max_attempts < 1) options_.max_attempts = 1;
}

Client::~Client() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* Client::AcquireHandle() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  CURL* h = curl_easy_init();
  if (h == nullptr) throw Internal("curl_easy_init() failed");
  return h;
}

void Client::ReleaseHandle(void* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(handle);
}

// Basic and SigV4 go through curl's options; a bearer token is a header (Perform adds it).
void Client::SetAuth(void* handle) const {
  CURL* h = static_cast<CURL*>(handle);
  if (auth_.kind == Auth::Kind::kBasic) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
  } else if (auth_.kind == Auth::Kind::kAwsSigV4) {
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, auth_.sigv4.c_str());
  } else {
    return;
  }
  curl_easy_setopt(h, CURLOPT_USERNAME, auth_.user.c_str());
  curl_easy_setopt(h, CURLOPT_PASSWORD, auth_.password.c_str());
}

// PEM text goes in as blobs (curl copies them); files by name.
static void SetTls(CURL* h, const Options::Tls& tls) {
  auto blob = [h](CURLoption option, const std::string& pem) {
    curl_blob b{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(h, option, &b);
  };
  if (!tls.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, tls.ca_file.c_str());
  if (!tls.ca_pem.empty()) blob(CURLOPT_CAINFO_BLOB, tls.ca_pem);
  if (!tls.cert_file.empty()) curl_easy_setopt(h, CURLOPT_SSLCERT, tls.cert_file.c_str());
  if (!tls.cert_pem.empty()) blob(CURLOPT_SSLCERT_BLOB, tls.cert_pem);
  if (!tls.key_file.empty()) curl_easy_setopt(h, CURLOPT_SSLKEY, tls.key_file.c_str());
  if (!tls.key_pem.empty()) blob(CURLOPT_SSLKEY_BLOB, tls.key_pem);
  if (tls.insecure_skip_verify) {
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
  }
}

void Client::Perform(void* handle, const Request& request, Attempt* attempt) const {
  CURL* h = static_cast<CURL*>(handle);
  curl_easy_reset(h);  // keeps the live connection
  const std::string url = base_url_ + request.target;
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, attempt->error);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   std::max(1L, static_cast<long>(options_.connect_timeout_s * 1000)));
  if (attempt->on_data != nullptr) {  // a stream: quiet for long is normal, the limit is whole
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, std::max(1L, attempt->stream_timeout_ms));
  } else {
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                     std::max(1L, static_cast<long>(options_.stall_timeout_s)));
    if (options_.request_timeout_s > 0)
      curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout_s * 1000));
  }
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  if (options_.cancelled) {
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, OnProgress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA,
                     const_cast<std::function<bool()>*>(&options_.cancelled));
  }
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, attempt);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, attempt);
  curl_slist* headers = nullptr;
  for (const auto& line : request.headers) headers = curl_slist_append(headers, line.c_str());
  const std::string bearer = "Authorization: Bearer " + auth_.token;
  if (auth_.kind == Auth::Kind::kBearer) headers = curl_slist_append(headers, bearer.c_str());
  SetAuth(h);
  SetTls(h, options_.tls);
  // curl sends "Expect: 100-continue" before large bodies and then waits up to a second for
  // the server's go-ahead; send the body right away instead. (Removing the header with "Expect:"
  // is not an option: curl's SigV4 signs the removed header and the signature no longer matches.)
  curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  const std::string& m = request.method;
  if (m == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (m == "PUT") {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(h, CURLOPT_READDATA, attempt);
    curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, OnSeek);
    curl_easy_setopt(h, CURLOPT_SEEKDATA, attempt);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body_size));
  } else if (m == "POST" || (m != "GET" && request.body_size > 0)) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body ? request.body : "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body_size));
    if (m != "POST") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m.c_str());
  } else if (m != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m.c_str());
  }
  attempt->code = curl_easy_perform(h);
  curl_slist_free_all(headers);
  if (attempt->code == CURLE_OK)
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &attempt->response.status);
}

// True for failures another attempt may fix; fills *problem with a one-line reason.
bool Client::Retryable(const Attempt& attempt, std::string* problem) const {
  if (attempt.code != CURLE_OK) {
    *problem = OneLine(fmt::format("{}{}{}", curl_easy_strerror(attempt.code),
                                   attempt.error[0] ? ": " : "", attempt.error));
    return true;
  }
  const Response& r = attempt.response;
  std::string detail = options_.detail ? options_.detail(r) : "";
  *problem = fmt::format("HTTP {}{}{}", r.status, detail.empty() ? "" : " ", OneLine(detail));
  if (r.status == 429 || r.status >= 500) return true;
  return options_.also_retry && options_.also_retry(r);
}

void Client::ThrowRefused(const std::string& what, const Response& r) const {
  std::string detail = options_.detail ? options_.detail(r) : OneLine(r.body, 200);
  throw Unauthenticated(fmt::format("{} refused {}: HTTP {} {}{}{}{}", Name(), what, r.status,
                                    r.status == 401 ? "Unauthorized" : "Forbidden",
                                    detail.empty() ? "" : ": ", OneLine(detail),
                                    options_.auth_hint.empty() ? "" : "; " + options_.auth_hint));
}

std::string Client::GaveUp(const std::string& what, bool reached, const std::string& problem,
                           int attempts, double seconds) const {
  const char* plural = attempts == 1 ? "" : "s";
  if (!reached)
    return fmt::format(
        "cannot reach {} for {}: {} (after {} attempt{} in {:.1f} s); check the URL and that the "
        "server is up",
        Name(), what, problem, attempts, plural, seconds);
  return fmt::format("{} kept failing {}: {} (after {} attempt{} in {:.1f} s)", Name(), what,
                     problem, attempts, plural, seconds);
}

void Client::Transfer(const Request& request, Attempt* attempt) {
  void* handle = AcquireHandle();
  try {
    Perform(handle, request, attempt);
  } catch (...) {
    curl_easy_cleanup(static_cast<CURL*>(handle));
    throw;
  }
  if (attempt->code == CURLE_OK) {
    ReleaseHandle(handle);
  } else {
    curl_easy_cleanup(static_cast<CURL*>(handle));
  }
}

Response Client::Send(const Request& request) {
  const std::string what =
      request.what.empty() ? request.method + " " + PathOf(request.target) : request.what;
  const auto start = std::chrono::steady_clock::now();
  for (int attempt_no = 1;; ++attempt_no) {
    Attempt attempt;
    attempt.request = &request;
    Transfer(request, &attempt);
    std::string problem;
    if (attempt.code != CURLE_OK && !RetryableCurl(attempt.code)) {
      Retryable(attempt, &problem);
      throw InvalidArgument(fmt::format("{} cannot be used for {}: {}", Name(), what, problem));
    }
    if (!Retryable(attempt, &problem)) {
      long s = attempt.response.status;
      if (options_.refusal_throws && (s == 401 || s == 403)) ThrowRefused(what, attempt.response);
      return std::move(attempt.response);
    }
    const bool stop = options_.cancelled && options_.cancelled();
    if (attempt_no >= options_.max_attempts || stop)
      throw Unavailable(GaveUp(what, attempt.code == CURLE_OK, problem, attempt_no, Since(start)));
    double pause = BackoffSeconds(options_, attempt_no - 1,
                                  ParseRetryAfter(attempt.response.Header("retry-after")));
    retries_++;
    if (log::Enabled(log::Subsys::kCore, spdlog::level::debug))
      log::Logger().debug("[core] {} {}: {} (attempt {}/{}); retrying in {:.0f} ms", Name(), what,
                          problem, attempt_no, options_.max_attempts, pause * 1000);
    if (!SleepUnlessCancelled(pause, options_.cancelled))
      throw Unavailable(GaveUp(what, attempt.code == CURLE_OK, problem, attempt_no, Since(start)));
  }
}

StreamResult Client::Stream(const Request& request, double timeout_s,
                            const std::function<bool(std::string_view)>& on_data) {
  const std::string what =
      request.what.empty() ? request.method + " " + PathOf(request.target) : request.what;
  const auto start = std::chrono::steady_clock::now();
  Attempt attempt;
  attempt.request = &request;
  attempt.on_data = &on_data;
  attempt.stream_timeout_ms = static_cast<long>(timeout_s * 1000);
  Transfer(request, &attempt);  // a cut stream leaves no usable connection: dropped
  if (attempt.data_error) std::rethrow_exception(attempt.data_error);
  StreamResult result;
  result.response = std::move(attempt.response);
  result.response.status = attempt.status_seen;
  if (attempt.stopped) {
    result.end = StreamResult::End::kStopped;
    return result;
  }
  if (attempt.code == CURLE_OPERATION_TIMEDOUT) {  // the caller's limit, also before an answer
    result.end = StreamResult::End::kTimedOut;
    return result;
  }
  if (attempt.code == CURLE_OK) return result;
  std::string problem;
  Retryable(attempt, &problem);
  if (!RetryableCurl(attempt.code))
    throw InvalidArgument(fmt::format("{} cannot be used for {}: {}", Name(), what, problem));
  if (attempt.status_seen == 0) throw Unavailable(GaveUp(what, false, problem, 1, Since(start)));
  throw Unavailable(fmt::format("{} broke off the stream of {} after {:.1f} s: {}", Name(), what,
                                Since(start), problem));
}

}  // namespace cohort::http
