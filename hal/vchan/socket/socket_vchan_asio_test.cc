// PollFd() driving a Boost.Asio event loop: a dup() of it in a stream_descriptor, one
// async_wait(wait_read) per batch, draining with non-blocking reads.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "hal/vchan/testing/helpers.h"
#include "hal/vchan/testing/temp_dir.h"
#include "hal/vchan/vchan.h"

namespace odyssey::vchan {
namespace {

using std::chrono::milliseconds;

TEST(SocketVchanAsio, PollFdDrivesAsyncWait) {
  testing::TempDir dir;
  const Options so = testing::SocketOpts(dir, 0);
  const Options co = testing::SocketOpts(dir, 2);
  // Client first (async), so the descriptor also has to report the connection.
  auto c = Vchan::ClientAsync(0, 640, co);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto s = Vchan::Server(2, 640, so);
  ASSERT_TRUE(s.ok()) << s.error().message;
  VchanPtr client = std::move(*c);
  client->SetNonBlocking(true);

  boost::asio::io_context io;
  boost::asio::posix::stream_descriptor sd(io, ::dup(client->PollFd()));
  std::string got;
  bool saw_close = false;
  std::function<void()> arm = [&] {
    sd.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                  [&](const boost::system::error_code& ec) {
                    if (ec) return;
                    (void)client->WaitFor(milliseconds(0));  // consume edges, progress
                    char buf[64];
                    for (;;) {
                      auto n = client->Read(buf, sizeof buf);
                      if (!n.ok()) {
                        saw_close = IsPeerClosed(n.error());
                        return;  // no re-arm: the loop ends
                      }
                      if (*n == 0) break;
                      got.append(buf, *n);
                    }
                    arm();
                  });
  };
  arm();
  std::thread writer([&] {
    for (char ch = '0'; ch <= '9'; ++ch) {
      if (!(*s)->Send(&ch, 1).ok()) return;
      std::this_thread::sleep_for(milliseconds(2));
    }
    (*s)->Close();
  });
  io.run_for(std::chrono::seconds(60));  // a safety bound, not a timing assertion
  writer.join();
  EXPECT_EQ(got, "0123456789");
  EXPECT_TRUE(saw_close);
}

}  // namespace
}  // namespace odyssey::vchan
