// The streaming half of the HTTP layer: JsonObjectSplitter (objects cut at every byte boundary,
// braces and quotes inside strings, garbage refused) and Client::Stream against a real HTTP
// server (cpp-httplib, chunked answers): pieces handed over as they arrive, a stop cuts the
// stream at once, an error answer's body comes back, the timeout ends a quiet stream, and a
// stream the server breaks off throws Unavailable naming the server.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/error.h"
#include "common/http.h"
#include "common/json_stream.h"

namespace cohort {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::vector<std::string> SplitAll(const std::string& text, size_t piece) {
  JsonObjectSplitter splitter;
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size(); i += piece) {
    splitter.Feed(std::string_view(text).substr(i, piece), [&](std::string_view o) {
      out.emplace_back(o);
      return true;
    });
  }
  EXPECT_EQ(splitter.pending(), 0u);
  return out;
}

TEST(JsonObjectSplitterTest, CutsObjectsWhereverThePiecesEnd) {
  const std::string a = R"({"result":{"events":[{"kv":{"key":"a}\"{"}}]}})";
  const std::string b = R"({"s":"\\","t":["{",{}]})";
  const std::string c = "{}";
  const std::string text = a + "\n" + b + "\r\n  " + c + "\n";
  for (size_t piece : {1, 2, 3, 7, 1000}) {
    EXPECT_EQ(SplitAll(text, piece), (std::vector<std::string>{a, b, c})) << "piece " << piece;
  }
}

TEST(JsonObjectSplitterTest, StopsWhenTheHandlerSaysSoAndRefusesGarbage) {
  JsonObjectSplitter splitter;
  int seen = 0;
  EXPECT_FALSE(splitter.Feed("{}{}{}", [&](std::string_view) { return ++seen < 2; }));
  EXPECT_EQ(seen, 2);
  JsonObjectSplitter bad;
  EXPECT_THROW(bad.Feed("{} x", [](std::string_view) { return true; }), DataLoss);
}

// A server whose /stream sends `{"n":i}` every 20 ms until told to stop or the client leaves;
// /short sends two objects and ends; /broken sends one and drops the connection; /missing 404s;
// /quiet sends nothing for long.
class StreamServer {
 public:
  StreamServer() {
    server_.Post("/stream", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [this](size_t, httplib::DataSink& s) {
        for (int i = 0; !stopping_ && i < 500; ++i) {
          const std::string o = "{\"n\":" + std::to_string(i) + "}\n";
          if (!s.write(o.data(), o.size())) return false;
          std::this_thread::sleep_for(milliseconds(20));
        }
        s.done();
        return true;
      });
    });
    server_.Post("/short", [](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [](size_t, httplib::DataSink& s) {
        s.write("{\"n\":0}{\"n\"", 11);
        s.write(":1}", 3);
        s.done();
        return true;
      });
    });
    server_.Post("/broken", [](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [](size_t, httplib::DataSink& s) {
        s.write("{\"n\":0}", 7);
        return false;  // abort: the connection closes without the last chunk
      });
    });
    server_.Post("/missing", [](const httplib::Request&, httplib::Response& res) {
      res.status = 404;
      res.set_content("{\"message\":\"no such stream\"}", "application/json");
    });
    server_.Post("/quiet", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [this](size_t, httplib::DataSink& s) {
        for (int i = 0; !stopping_ && i < 500; ++i) std::this_thread::sleep_for(milliseconds(10));
        s.done();
        return true;
      });
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(milliseconds(1));
  }
  ~StreamServer() {
    stopping_ = true;
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  std::atomic<bool> stopping_{false};
  int port_ = 0;
  std::thread thread_;
};

http::Request Post(const std::string& target) {
  http::Request r;
  r.method = "POST";
  r.target = target;
  r.SetBody(std::string());
  return r;
}

class HttpStreamTest : public ::testing::Test {
 protected:
  // Streams target, collecting its objects; stop_after: stop at that many (0: never).
  http::StreamResult Run(const std::string& target, double timeout_s, int stop_after = 0) {
    JsonObjectSplitter splitter;
    return client_.Stream(Post(target), timeout_s, [&](std::string_view data) {
      return splitter.Feed(data, [&](std::string_view o) {
        objects_.emplace_back(o);
        return stop_after == 0 || static_cast<int>(objects_.size()) < stop_after;
      });
    });
  }
  StreamServer server_;
  http::Client client_{server_.url(), http::Auth::None(), [] {
                         http::Options o;
                         o.service = "stream server";
                         return o;
                       }()};
  std::vector<std::string> objects_;
};

TEST_F(HttpStreamTest, HandsOverPiecesAsTheyArriveAndStopsAtOnce) {
  const auto start = Clock::now();
  const auto r = Run("/stream", 10, 3);
  EXPECT_EQ(r.end, http::StreamResult::End::kStopped);
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(objects_, (std::vector<std::string>{"{\"n\":0}", "{\"n\":1}", "{\"n\":2}"}));
  EXPECT_LT(MsSince(start), 1000);  // three objects 20 ms apart, not the whole 10 s stream
  const auto r2 = Run("/short", 10);
  EXPECT_EQ(r2.end, http::StreamResult::End::kEnded);
  EXPECT_EQ(objects_.back(), "{\"n\":1}");
}

TEST_F(HttpStreamTest, ErrorAnswerTimeoutAndABrokenStream) {
  const auto missing = Run("/missing", 10);
  EXPECT_EQ(missing.response.status, 404);
  EXPECT_EQ(missing.response.body, "{\"message\":\"no such stream\"}");
  EXPECT_TRUE(objects_.empty());  // an error answer's body is not a stream

  const auto start = Clock::now();
  EXPECT_EQ(Run("/quiet", 0.3).end, http::StreamResult::End::kTimedOut);
  EXPECT_GE(MsSince(start), 250);
  EXPECT_LT(MsSince(start), 2000);

  try {
    Run("/broken", 10);
    ADD_FAILURE() << "a broken stream did not throw";
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("stream server " + server_.url() + " broke off"),
              std::string::npos)
        << e.what();
  }
}

TEST(HttpStreamNoServerTest, UnreachableServerIsUnavailable) {
  http::Client client("http://127.0.0.1:1", http::Auth::None(), {});
  EXPECT_THROW(client.Stream(Post("/x"), 2, [](std::string_view) { return true; }), Unavailable);
}

}  // namespace
}  // namespace cohort
