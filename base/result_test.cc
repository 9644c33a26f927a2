#include "base/result.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "base/io.h"
#include "base/unique_fd.h"

namespace odyssey {
namespace {

Result<int> Half(int x) {
  if (x % 2) return Error{"odd: " + std::to_string(x), EINVAL};
  return x / 2;
}

Status Chain(int x) {
  ODYSSEY_TRY(Half(x));
  return OkStatus();
}

TEST(Result, ValueAndError) {
  EXPECT_EQ(Half(4).value(), 2);
  auto r = Half(3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "odd: 3");
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_FALSE(Chain(5).ok());
  EXPECT_TRUE(Chain(6).ok());
}

TEST(Result, ErrnoNamesCallAndObject) {
  Error e = Error::Errno(ENOENT, "open", "/nope");
  EXPECT_EQ(e.message, "open(/nope): No such file or directory");
  EXPECT_EQ(e.Wrap("loading config").message, "loading config: open(/nope): No such file or directory");
}

TEST(Result, ValueOnErrorAborts) {
  EXPECT_DEATH({ (void)Half(1).value(); }, "odd: 1");
}

TEST(Io, RoundTripAndAtomicWrite) {
  char dir[] = "/tmp/odyssey-io-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/f";
  ASSERT_TRUE(WriteFileAtomic(path, "hello").ok());
  auto content = ReadFileToString(path);
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "hello");
  EXPECT_FALSE(ReadFileToString(path, 2).ok());
  EXPECT_FALSE(ReadFileToString(std::string(dir) + "/missing").ok());
  unlink(path.c_str());
  rmdir(dir);
}

TEST(Io, ReadExactReportsEarlyEof) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  ASSERT_TRUE(WriteAll(w.get(), "abc", 3).ok());
  w.reset();
  char buf[4];
  Status st = ReadExact(r.get(), buf, 4);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("unexpected end"), std::string::npos);
}

}  // namespace
}  // namespace odyssey
