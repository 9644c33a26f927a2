#include "engine/admin_protocol.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/cli.h"
#include "handlers/open_in_vm.h"
#include "handlers/url.h"

namespace odyssey::engine {
namespace {

struct Pair {
  UniqueFd a, b;
};
Pair MakePair() {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

std::vector<ReceivedLine> ReadAll(int fd, LineReader& r) {
  std::vector<ReceivedLine> out;
  for (;;) {
    auto n = r.ReadFrom(fd);
    if (!n.ok() || *n == 0) break;
    while (auto l = r.Next()) out.push_back(std::move(*l));
  }
  while (auto l = r.Next()) out.push_back(std::move(*l));
  return out;
}

TEST(AdminProtocolTest, RoundTripWithDescriptors) {
  Pair p = MakePair();
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  UniqueFd pr(pipefd[0]), pw(pipefd[1]);
  ASSERT_TRUE(SendLine(p.a.get(), {{"op", "run"}, {"argv", {"echo", "hi"}}}, {pr.get(), pw.get()}).ok());
  ASSERT_TRUE(SendLine(p.a.get(), {{"op", "ping"}}).ok());
  p.a.reset();
  LineReader r(1024);
  auto lines = ReadAll(p.b.get(), r);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].fds.size(), 2u);
  EXPECT_TRUE(lines[1].fds.empty());
  auto j = ParseRequest(lines[0].text);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["argv"][1], "hi");
  // The received write end is the same pipe: bytes written to it come out of pr.
  ASSERT_EQ(::write(lines[0].fds[1].get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(pr.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

TEST(AdminProtocolTest, OversizedLineIsReportedOnceAndDiscarded) {
  Pair p = MakePair();
  std::string big(5000, 'a');
  std::string data = big + "\n{\"op\":\"ping\"}\n";
  ASSERT_EQ(::write(p.a.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  p.a.reset();
  LineReader r(1024);
  auto lines = ReadAll(p.b.get(), r);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(lines[0].oversized);
  EXPECT_EQ(lines[1].text, "{\"op\":\"ping\"}");
}

TEST(AdminProtocolTest, MalformedRequestsAreErrors) {
  EXPECT_FALSE(ParseRequest("{").ok());
  EXPECT_FALSE(ParseRequest("[1,2]").ok());
  EXPECT_FALSE(ParseRequest("{\"op\": 3}").ok());
  EXPECT_FALSE(ParseRequest("{}").ok());
  EXPECT_FALSE(ParseRequest(std::string("{\"op\":\"p\0\"}", 12)).ok());
  EXPECT_TRUE(ParseRequest("{\"op\":\"ping\"}").ok());
  auto e = ErrorReply("nope", 7);
  EXPECT_EQ(e["ok"], false);
  EXPECT_EQ(e["id"], 7);
}

TEST(AdminProtocolTest, PeerCredentials) {
  Pair p = MakePair();
  auto cred = PeerCredentials(p.b.get());
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ(cred->uid, ::getuid());
  EXPECT_EQ(cred->pid, ::getpid());
}

TEST(CliHelpersTest, UrlsAndBasenames) {
  EXPECT_TRUE(handlers::LooksLikeUrl("https://example.org/"));
  EXPECT_TRUE(handlers::LooksLikeUrl("ftp://x"));
  EXPECT_FALSE(handlers::LooksLikeUrl("/tmp/a://b"));
  EXPECT_FALSE(handlers::LooksLikeUrl("file.pdf"));
  EXPECT_EQ(handlers::SanitizeBasename("my doc;rm -rf.pdf"), "my_doc_rm_-rf.pdf");
  EXPECT_EQ(handlers::SanitizeBasename(".."), "file");
}

}  // namespace
}  // namespace odyssey::engine
