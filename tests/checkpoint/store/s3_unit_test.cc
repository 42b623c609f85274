// The S3 pieces that need no server: XML scanning and unescaping, URI encoding, configuration
// from the environment.
#include <gtest/gtest.h>

#include "checkpoint/store/s3_client.h"
#include "checkpoint/store/s3_object_store.h"
#include "checkpoint/store/s3_options.h"
#include "checkpoint/store/s3_xml.h"
#include "common/error.h"
#include "tests/util/scoped_env.h"

namespace cohort::checkpoint {
namespace {

using cohort::testing::ScopedEnv;

TEST(S3Xml, ElementsAndEntities) {
  const std::string doc =
      "<?xml version=\"1.0\"?><ListBucketResult><KeyCount>2</KeyCount><IsTruncated>true"
      "</IsTruncated><Contents><Key>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Key>"
      "<Size>12</Size></Contents><Contents><Key>&#252;&#xE9;&#x20AC;&#128512;</Key><Size>0</Size>"
      "</Contents><Contents><Key/><Size>1</Size></Contents>"
      "<NextContinuationToken>t+/=</NextContinuationToken></ListBucketResult>";
  auto contents = xml::Elements(doc, "Contents");
  ASSERT_EQ(contents.size(), 3u);
  EXPECT_EQ(xml::First(contents[0], "Key").value(), "a & b <c> \"d\" 'e'");
  EXPECT_EQ(xml::First(contents[0], "Size").value(), "12");
  EXPECT_EQ(xml::First(contents[1], "Key").value(),
            "\xc3\xbc\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");  // ü é € 😀
  EXPECT_EQ(xml::First(contents[2], "Key").value(), "");
  // <Key> must not match <KeyCount>.
  EXPECT_EQ(xml::Elements(doc, "Key").size(), 3u);
  EXPECT_EQ(xml::First(doc, "KeyCount").value(), "2");
  EXPECT_EQ(xml::First(doc, "IsTruncated").value(), "true");
  EXPECT_EQ(xml::First(doc, "NextContinuationToken").value(), "t+/=");
  EXPECT_FALSE(xml::First(doc, "Missing").has_value());
  // Unknown or malformed references stay as they are.
  EXPECT_EQ(xml::Unescape("&bogus; &#xZZ; & &amp"), "&bogus; &#xZZ; & &amp");
  EXPECT_EQ(xml::Escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;");
  EXPECT_EQ(xml::Unescape(xml::Escape("\"quoted-etag\"&<>")), "\"quoted-etag\"&<>");
}

TEST(S3Encoding, UriEncodeAndSha256) {
  EXPECT_EQ(UriEncode("a/b c+d~e_f.g-h", true), "a/b%20c%2Bd~e_f.g-h");
  EXPECT_EQ(UriEncode("a/b", false), "a%2Fb");
  EXPECT_EQ(UriEncode("\xc3\xbc%=&?#*", true), "%C3%BC%25%3D%26%3F%23%2A");
  EXPECT_EQ(Sha256Hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc", 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(S3Options, CohortVariablesTakePrecedenceOverAws) {
  ScopedEnv env({{"AWS_ENDPOINT_URL", "http://aws:1"},
                 {"AWS_REGION", "eu-west-1"},
                 {"AWS_DEFAULT_REGION", std::nullopt},
                 {"AWS_ACCESS_KEY_ID", "aws-key"},
                 {"AWS_SECRET_ACCESS_KEY", "aws-secret"},
                 {"AWS_SESSION_TOKEN", std::nullopt},
                 {"COHORT_S3_ENDPOINT", "http://cohort:2"},
                 {"COHORT_S3_REGION", std::nullopt},
                 {"COHORT_S3_ACCESS_KEY_ID", "cohort-key"},
                 {"COHORT_S3_SECRET_ACCESS_KEY", ""},
                 {"COHORT_S3_SESSION_TOKEN", std::nullopt},
                 {"COHORT_S3_PART_SIZE", "6291456"},
                 {"COHORT_S3_PARALLEL_PARTS", "3"},
                 {"COHORT_S3_MAX_ATTEMPTS", "2"}});
  S3Options o = S3Options::FromEnv();
  EXPECT_EQ(o.endpoint, "http://cohort:2");
  EXPECT_EQ(o.region, "eu-west-1");
  EXPECT_EQ(o.access_key_id, "cohort-key");
  EXPECT_EQ(o.secret_access_key, "aws-secret");  // an empty COHORT_ value counts as unset
  EXPECT_EQ(o.part_size, 6291456u);
  EXPECT_EQ(o.parallel_parts, 3);
  EXPECT_EQ(o.max_attempts, 2);
  {
    ScopedEnv small({{"COHORT_S3_PART_SIZE", "1000"}});
    EXPECT_THROW(S3Options::FromEnv(), InvalidArgument);
  }
  {
    ScopedEnv none({{"AWS_REGION", std::nullopt}, {"AWS_DEFAULT_REGION", "ap-south-1"}});
    EXPECT_EQ(S3Options::FromEnv().region, "ap-south-1");
  }
}

TEST(S3Options, OpenRefusesMissingCredentialsAndBadEndpoints) {
  S3Options o;
  o.endpoint = "http://127.0.0.1:1";
  try {
    OpenS3ObjectStore("s3://bucket/run", o);
    FAIL() << "opened without credentials";
  } catch (const Unauthenticated& e) {
    EXPECT_NE(std::string(e.what()).find("COHORT_S3_ACCESS_KEY_ID"), std::string::npos);
  }
  o.access_key_id = "k";
  o.secret_access_key = "s";
  o.endpoint = "127.0.0.1:9000";  // no scheme
  EXPECT_THROW(OpenS3ObjectStore("s3://bucket/run", o), InvalidArgument);
}

}  // namespace
}  // namespace cohort::checkpoint
