// 1 GiB through the socket vchan between two processes, hash-compared: the sender hashes
// what it generated, the receiver hashes what arrived (FNV-1a over 64-bit words, cheap
// enough under ASan). Partial Write/Read with varying sizes on both ends.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "hal/vchan/testing/helpers.h"
#include "hal/vchan/testing/temp_dir.h"
#include "hal/vchan/vchan.h"
#include "tests/vchan/process_util.h"

namespace odyssey::vchan {
namespace {

using testing::ForkChild;
using testing::TempDir;
using testing::WaitChild;

constexpr uint64_t kTotal = uint64_t{1} << 30;
constexpr size_t kBlock = 1 << 20;

// FNV-1a, one 64-bit word at a time.
struct WordHash {
  uint64_t h = 0xcbf29ce484222325ull;
  void Add(const uint64_t* w, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ w[i]) * 0x100000001b3ull;
  }
};

// xorshift64*: a different word at every offset, so reordering or loss changes the hash.
struct Stream {
  uint64_t s = 0x9e3779b97f4a7c15ull;
  void Fill(uint64_t* w, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      s ^= s >> 12;
      s ^= s << 25;
      s ^= s >> 27;
      w[i] = s * 0x2545f4914f6cdd1dull;
    }
  }
};

TEST(VchanLarge, OneGibHashCompared) {
  TempDir dir;
  const Options so = testing::SocketOpts(dir, 0);
  const Options co = testing::SocketOpts(dir, 3);
  int hash_pipe[2];
  ASSERT_EQ(::pipe(hash_pipe), 0);

  auto server = Vchan::Server(3, 730, so);
  ASSERT_TRUE(server.ok()) << server.error().message;

  pid_t sender = ForkChild([&] {
    auto c = Vchan::Client(0, 730, co);
    if (!c.ok()) return 1;
    std::vector<uint64_t> block(kBlock / 8);
    Stream gen;
    WordHash hash;
    uint64_t sent = 0;
    size_t turn = 0;
    while (sent < kTotal) {
      gen.Fill(block.data(), block.size());
      hash.Add(block.data(), block.size());
      const char* p = reinterpret_cast<const char*>(block.data());
      size_t left = kBlock;
      // Alternate all-or-nothing Send and partial Write of odd sizes.
      while (left > 0) {
        if (++turn % 2 == 0) {
          size_t len = std::min<size_t>(left, 65536);
          if (!(*c)->Send(p, len).ok()) return 2;
          p += len;
          left -= len;
        } else {
          auto n = (*c)->Write(p, std::min<size_t>(left, 1 + turn * 7919 % 200000));
          if (!n.ok()) return 3;
          p += *n;
          left -= *n;
        }
      }
      sent += kBlock;
    }
    if (::write(hash_pipe[1], &hash.h, sizeof hash.h) != sizeof hash.h) return 4;
    (*c)->Close();
    return 0;
  });
  ASSERT_GT(sender, 0);
  ::close(hash_pipe[1]);

  // Receiver: partial reads of varying size into a block buffer; hash whole words.
  std::vector<uint64_t> block(kBlock / 8);
  char* base = reinterpret_cast<char*>(block.data());
  WordHash hash;
  uint64_t received = 0;
  size_t fill = 0, turn = 0;
  while (received < kTotal) {
    size_t want = std::min<size_t>(kBlock - fill, 1 + (++turn * 104729) % 300000);
    auto n = (*server)->Read(base + fill, want);
    ASSERT_TRUE(n.ok()) << n.error().message << " after " << received << " bytes";
    fill += *n;
    received += *n;
    if (fill == kBlock) {
      hash.Add(block.data(), block.size());
      fill = 0;
    }
  }
  EXPECT_EQ(fill, 0u);
  // Nothing beyond 1 GiB; then the sender's close.
  char extra;
  auto after = (*server)->Read(&extra, 1);
  ASSERT_FALSE(after.ok());
  EXPECT_TRUE(IsPeerClosed(after.error()));

  uint64_t sent_hash = 0;
  ASSERT_EQ(::read(hash_pipe[0], &sent_hash, sizeof sent_hash),
            static_cast<ssize_t>(sizeof sent_hash));
  ::close(hash_pipe[0]);
  EXPECT_EQ(WaitChild(sender), 0);
  EXPECT_EQ(hash.h, sent_hash);
  EXPECT_EQ(received, kTotal);
}

}  // namespace
}  // namespace odyssey::vchan
