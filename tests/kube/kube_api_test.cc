// The API-server double's REST semantics as a client sees them over HTTP: discovery, create /
// get / list with selectors, 409 AlreadyExists and Conflict, merge and strategic patches, the
// status subresource and metadata.generation, watch replay and 410 after compaction, cascading
// delete through ownerReferences, Status objects for errors.
#include <gtest/gtest.h>

#include "tests/kube/rest_client.h"
#include "tests/util/kube/kube_double.h"

namespace cohort::kube {
namespace {

using testing::Rest;

const char kCms[] = "/api/v1/namespaces/default/configmaps";

Json ConfigMap(const std::string& name, const Json& labels = Json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"labels", labels}}},
          {"data", {{"k", "v"}}}};
}

Json Crd() {
  return Json::parse(R"({
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
      "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
      "versions": [{"name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}},
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
          "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "minimum": 1},
            "color": {"type": "string", "default": "blue"}}},
          "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}})");
}

const char kWidgets[] = "/apis/example.com/v1/namespaces/default/widgets";

TEST(KubeApi, DiscoveryListsBuiltInGroupsAndCrdGroupsOnceCreated) {
  KubeDouble api;
  Rest rest(api.port());
  EXPECT_EQ(rest.Get("/api").body["versions"], Json::array({"v1"}));
  const Json core = rest.Get("/api/v1").body;
  EXPECT_EQ(core["kind"], "APIResourceList");
  bool pods_status = false;
  for (const auto& r : core["resources"]) pods_status |= r["name"] == "pods/status";
  EXPECT_TRUE(pods_status);
  EXPECT_EQ(rest.Get("/apis/batch/v1").body["groupVersion"], "batch/v1");
  EXPECT_EQ(rest.Get("/apis/coordination.k8s.io/v1").status, 200);
  EXPECT_EQ(rest.Get("/apis/example.com/v1").status, 404);
  ASSERT_EQ(rest.Post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Crd()).status,
            201);
  const Json group = rest.Get("/apis/example.com").body;
  EXPECT_EQ(group["preferredVersion"]["groupVersion"], "example.com/v1");
  const Json widgets = rest.Get("/apis/example.com/v1").body;
  EXPECT_EQ(widgets["resources"][0]["name"], "widgets");
  EXPECT_EQ(widgets["resources"][0]["namespaced"], true);
  EXPECT_EQ(rest.Get("/version").body["major"], "1");
}

TEST(KubeApi, CreateGetListWithSelectorsAndErrorsAsStatus) {
  KubeDouble api;
  Rest rest(api.port());
  const auto a = rest.Post(kCms, ConfigMap("a", {{"app", "x"}}));
  ASSERT_EQ(a.status, 201) << a.text;
  EXPECT_FALSE(a.body["metadata"]["uid"].get<std::string>().empty());
  EXPECT_FALSE(a.body["metadata"]["creationTimestamp"].get<std::string>().empty());
  ASSERT_EQ(rest.Post(kCms, ConfigMap("b", {{"app", "y"}})).status, 201);
  const auto again = rest.Post(kCms, ConfigMap("a"));
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.body["kind"], "Status");
  EXPECT_EQ(again.body["reason"], "AlreadyExists");
  EXPECT_EQ(again.body["message"], "configmaps \"a\" already exists");
  Json gen = ConfigMap("");
  gen["metadata"].erase("name");
  gen["metadata"]["generateName"] = "gen-";
  const auto g = rest.Post(kCms, gen);
  ASSERT_EQ(g.status, 201);
  EXPECT_EQ(g.body["metadata"]["name"].get<std::string>().rfind("gen-", 0), 0u);
  EXPECT_EQ(g.body["metadata"]["name"].get<std::string>().size(), 9u);
  const auto missing = rest.Get(std::string(kCms) + "/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body["reason"], "NotFound");
  EXPECT_EQ(rest.Post("/api/v1/namespaces/nowhere/configmaps", ConfigMap("c")).status, 404);
  const Json list = rest.Get(std::string(kCms) + "?labelSelector=app%3Dx").body;
  ASSERT_EQ(list["items"].size(), 1u);
  EXPECT_EQ(list["items"][0]["metadata"]["name"], "a");
  EXPECT_EQ(list["kind"], "ConfigMapList");
  EXPECT_EQ(rest.Get(std::string(kCms) + "?labelSelector=app%20in%20(x,y)").body["items"].size(),
            2u);
  EXPECT_EQ(rest.Get(std::string(kCms) + "?labelSelector=app!%3Dx").body["items"].size(), 2u);
  EXPECT_EQ(rest.Get(std::string(kCms) + "?fieldSelector=metadata.name%3Db").body["items"].size(),
            1u);
  EXPECT_EQ(rest.Get(std::string(kCms) + "?fieldSelector=data.k%3Dv").status, 400);
  EXPECT_EQ(std::stoll(list["metadata"]["resourceVersion"].get<std::string>()),
            std::stoll(g.body["metadata"]["resourceVersion"].get<std::string>()));
}

TEST(KubeApi, StaleResourceVersionConflictsAndNoOpKeepsVersion) {
  KubeDouble api;
  Rest rest(api.port());
  Json cm = rest.Post(kCms, ConfigMap("a")).body;
  Json first = cm;
  first["data"]["k"] = "v2";
  const auto ok = rest.Put(std::string(kCms) + "/a", first);
  ASSERT_EQ(ok.status, 200) << ok.text;
  EXPECT_NE(ok.body["metadata"]["resourceVersion"], cm["metadata"]["resourceVersion"]);
  Json stale = cm;
  stale["data"]["k"] = "v3";
  const auto conflict = rest.Put(std::string(kCms) + "/a", stale);
  EXPECT_EQ(conflict.status, 409);
  EXPECT_EQ(conflict.body["reason"], "Conflict");
  EXPECT_NE(conflict.body["message"].get<std::string>().find("the object has been modified"),
            std::string::npos);
  const auto noop = rest.Put(std::string(kCms) + "/a", ok.body);
  EXPECT_EQ(noop.body["metadata"]["resourceVersion"], ok.body["metadata"]["resourceVersion"]);
  const auto patched =
      rest.Patch(std::string(kCms) + "/a", {{"data", {{"k", nullptr}, {"n", "1"}}}});
  ASSERT_EQ(patched.status, 200);
  EXPECT_EQ(patched.body["data"], Json({{"n", "1"}}));
  const auto json_patch = rest.Patch(
      std::string(kCms) + "/a", Json::parse(R"([{"op":"replace","path":"/data/n","value":"2"}])"),
      "application/json-patch+json");
  EXPECT_EQ(json_patch.body["data"]["n"], "2");
}

TEST(KubeApi, StatusSubresourceGenerationPruningAndValidation) {
  KubeDouble api;
  Rest rest(api.port());
  ASSERT_EQ(rest.Post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Crd()).status,
            201);
  Json w = {{"apiVersion", "example.com/v1"},
            {"kind", "Widget"},
            {"metadata", {{"name", "w"}}},
            {"spec", {{"size", 2}, {"extra", 1}}},
            {"status", {{"phase", "Made"}}}};
  const auto created = rest.Post(kWidgets, w);
  ASSERT_EQ(created.status, 201) << created.text;
  EXPECT_FALSE(created.body.contains("status"));         // reset on create
  EXPECT_FALSE(created.body["spec"].contains("extra"));  // pruned
  EXPECT_EQ(created.body["spec"]["color"], "blue");      // defaulted
  EXPECT_EQ(created.body["metadata"]["generation"], 1);
  const auto strict =
      rest.Post(std::string(kWidgets) + "?fieldValidation=Strict",
                {{"metadata", {{"name", "s"}}}, {"spec", {{"size", 1}, {"extra", 1}}}});
  EXPECT_EQ(strict.status, 400);
  EXPECT_NE(strict.body["message"].get<std::string>().find("unknown field \"spec.extra\""),
            std::string::npos)
      << strict.text;
  const auto invalid =
      rest.Post(kWidgets, {{"metadata", {{"name", "bad"}}}, {"spec", {{"size", 0}}}});
  EXPECT_EQ(invalid.status, 422);
  EXPECT_EQ(invalid.body["reason"], "Invalid");
  EXPECT_NE(invalid.body["message"].get<std::string>().find("spec.size"), std::string::npos)
      << invalid.text;
  const auto st = rest.Patch(std::string(kWidgets) + "/w/status",
                             {{"status", {{"phase", "Made"}}}, {"spec", {{"size", 9}}}});
  ASSERT_EQ(st.status, 200) << st.text;
  EXPECT_EQ(st.body["status"]["phase"], "Made");
  EXPECT_EQ(st.body["spec"]["size"], 2);  // /status changes only status
  EXPECT_EQ(st.body["metadata"]["generation"], 1);
  const auto main = rest.Patch(std::string(kWidgets) + "/w",
                               {{"status", {{"phase", "Gone"}}}, {"spec", {{"size", 3}}}});
  EXPECT_EQ(main.body["status"]["phase"], "Made");  // the main endpoint ignores status
  EXPECT_EQ(main.body["spec"]["size"], 3);
  EXPECT_EQ(main.body["metadata"]["generation"], 2);
  EXPECT_EQ(rest.Patch(std::string(kWidgets) + "/w", {{"spec", {{"size", 4}}}},
                       "application/strategic-merge-patch+json")
                .status,
            415);
}

TEST(KubeApi, WatchReplaysInOrderAndAnswersGoneAfterCompaction) {
  KubeDouble api;
  Rest rest(api.port());
  const std::string rv = rest.Get(kCms).body["metadata"]["resourceVersion"];
  rest.Post(kCms, ConfigMap("a"));
  rest.Patch(std::string(kCms) + "/a", {{"data", {{"k", "2"}}}});
  rest.Delete(std::string(kCms) + "/a");
  auto events = rest.Watch(std::string(kCms) + "?watch=true&resourceVersion=" + rv, 3,
                           std::chrono::seconds(5));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["type"], "ADDED");
  EXPECT_EQ(events[1]["type"], "MODIFIED");
  EXPECT_EQ(events[1]["object"]["data"]["k"], "2");
  EXPECT_EQ(events[2]["type"], "DELETED");
  int64_t last = 0;
  for (const auto& e : events) {
    const int64_t v = std::stoll(e["object"]["metadata"]["resourceVersion"].get<std::string>());
    EXPECT_GT(v, last);
    last = v;
  }
  // timeoutSeconds ends a quiet watch; "" starts with what exists.
  rest.Post(kCms, ConfigMap("b"));
  const auto start = std::chrono::steady_clock::now();
  events = rest.Watch(std::string(kCms) + "?watch=1&timeoutSeconds=1", 10, std::chrono::seconds(5));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["type"], "ADDED");
  EXPECT_EQ(events[0]["object"]["metadata"]["name"], "b");
  api.store().Compact();
  events = rest.Watch(std::string(kCms) + "?watch=true&resourceVersion=" + rv, 2,
                      std::chrono::seconds(5));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["type"], "ERROR");
  EXPECT_EQ(events[0]["object"]["code"], 410);
  EXPECT_EQ(events[0]["object"]["reason"], "Expired");
  EXPECT_NE(events[0]["object"]["message"].get<std::string>().find("too old resource version"),
            std::string::npos);
}

TEST(KubeApi, DroppedWatchEndsTheStream) {
  KubeDouble api;
  Rest rest(api.port());
  std::thread dropper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(rest.Post("/_double/drop-watches", Json::object()).status, 200);
  });
  const auto start = std::chrono::steady_clock::now();
  auto events =
      rest.Watch(std::string(kCms) + "?watch=true&resourceVersion=1", 10, std::chrono::seconds(10));
  dropper.join();
  EXPECT_TRUE(events.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST(KubeApi, DeletePropagatesThroughOwnerReferences) {
  KubeDouble api;
  Rest rest(api.port());
  auto owned = [&](const std::string& name, const Json& owner) {
    Json cm = ConfigMap(name);
    cm["metadata"]["ownerReferences"] = {{{"apiVersion", "v1"},
                                          {"kind", "ConfigMap"},
                                          {"name", owner["metadata"]["name"]},
                                          {"uid", owner["metadata"]["uid"]},
                                          {"controller", true}}};
    return rest.Post(kCms, cm).body;
  };
  const Json root = rest.Post(kCms, ConfigMap("root")).body;
  const Json child = owned("child", root);
  owned("grandchild", child);
  ASSERT_EQ(rest.Delete(std::string(kCms) + "/root", {{"propagationPolicy", "Background"}}).status,
            200);
  EXPECT_EQ(rest.Get(std::string(kCms) + "/child").status, 404);
  EXPECT_EQ(rest.Get(std::string(kCms) + "/grandchild").status, 404);
  const Json root2 = rest.Post(kCms, ConfigMap("root")).body;
  owned("kept", root2);
  ASSERT_EQ(rest.Delete(std::string(kCms) + "/root", {{"propagationPolicy", "Orphan"}}).status,
            200);
  const auto kept = rest.Get(std::string(kCms) + "/kept");
  ASSERT_EQ(kept.status, 200);
  EXPECT_FALSE(kept.body["metadata"].contains("ownerReferences"));
  const Json root3 = rest.Post(kCms, ConfigMap("root")).body;
  owned("fg", root3);
  ASSERT_EQ(rest.Delete(std::string(kCms) + "/root?propagationPolicy=Foreground").status, 200);
  EXPECT_EQ(rest.Get(std::string(kCms) + "/fg").status, 404);
  EXPECT_EQ(rest.Get(std::string(kCms) + "/root").status, 404);
}

TEST(KubeApi, FinalizersDelayDeletionAndSelectorsSeeObjectsLeave) {
  KubeDouble api;
  Rest rest(api.port());
  const std::string rv = rest.Get(kCms).body["metadata"]["resourceVersion"];
  Json cm = ConfigMap("f", {{"app", "x"}});
  cm["metadata"]["finalizers"] = {"example.com/keep"};
  ASSERT_EQ(rest.Post(kCms, cm).status, 201);
  const auto marked = rest.Delete(std::string(kCms) + "/f");
  ASSERT_EQ(marked.status, 200) << marked.text;
  EXPECT_TRUE(marked.body["metadata"].contains("deletionTimestamp"));
  ASSERT_EQ(rest.Get(std::string(kCms) + "/f").status, 200);  // still there
  // Relabelled out of the selector: a watch on app=x sees it leave (DELETED); then the last
  // finalizer goes and the object with it.
  ASSERT_EQ(
      rest.Patch(std::string(kCms) + "/f", {{"metadata", {{"labels", {{"app", "y"}}}}}}).status,
      200);
  ASSERT_EQ(rest.Patch(std::string(kCms) + "/f", {{"metadata", {{"finalizers", nullptr}}}}).status,
            200);
  EXPECT_EQ(rest.Get(std::string(kCms) + "/f").status, 404);
  auto events =
      rest.Watch(std::string(kCms) + "?watch=true&labelSelector=app%3Dx&resourceVersion=" + rv, 3,
                 std::chrono::seconds(2));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["type"], "ADDED");
  EXPECT_EQ(events[1]["type"], "MODIFIED");  // deletionTimestamp set
  EXPECT_EQ(events[2]["type"], "DELETED");   // left the selector
  EXPECT_EQ(events[2]["object"]["metadata"]["labels"]["app"], "y");
  events = rest.Watch(std::string(kCms) + "?watch=true&resourceVersion=" + rv, 5,
                      std::chrono::seconds(2));
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[4]["type"], "DELETED");  // removed once the finalizer was cleared
}

TEST(KubeApi, InjectedFailuresAnswerStatusObjects) {
  KubeDouble api;
  Rest rest(api.port());
  api.http().FailNext(2, 500, "GET", "/configmaps");
  EXPECT_EQ(rest.Get(kCms).status, 500);
  EXPECT_EQ(rest.Get(kCms).body["reason"], "InternalError");
  EXPECT_EQ(rest.Get(kCms).status, 200);
}

}  // namespace
}  // namespace cohort::kube
