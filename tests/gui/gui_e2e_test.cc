// End-to-end GUI tests under two private Xvfb servers: a "host" display where gui-daemon's
// session shows windows, and a "guest" display where gui-agent and a test app run. The
// vchan is the socket backend in a temporary directory. Also a hostile agent (the test
// itself as vchan server) that sends garbage, oversized windows, bad rectangles, long
// titles, unknown types, floods and unsolicited clipboard data.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "gui/agent/agent.h"
#include "gui/daemon/gui_session.h"
#include "gui/framer.h"
#include "gui/xvfb.h"
#include "hal/vchan/vchan.h"
#include "tests/gui/gui_test_util.h"

namespace odyssey::gui {
namespace {

using testing::Child;
using testing::WaitUntil;
using testing::XProbe;

constexpr int kDomid = 7;
constexpr uint8_t kKeyA = 38, kKeyB = 56, kKeyC = 54, kKeyV = 55, kCtrl = 37, kShift = 50;

class GuiEnv : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!XvfbServer::Available()) GTEST_SKIP() << "Xvfb is not installed";
    auto h = XvfbServer::Start(1024, 768);
    ASSERT_TRUE(h.ok()) << h.error().message;
    host_ = std::move(h.value());
    auto g = XvfbServer::Start(800, 600);
    ASSERT_TRUE(g.ok()) << g.error().message;
    guest_ = std::move(g.value());
    char tmpl[] = "/tmp/odyssey-gui-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    clipboard_ = std::make_shared<ClipboardBuffer>();
    probe_ = std::make_unique<XProbe>(host_->display());
    ASSERT_TRUE(probe_->ok());
  }

  void TearDown() override {
    session_.reset();
    if (agent_thread_.joinable()) agent_thread_.join();
    probe_.reset();
    guest_.reset();
    host_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void StartSession() {
    SessionOptions o;
    o.domid = kDomid;
    o.domain_name = "disp7";
    o.vchan_socket_dir = dir_;
    o.own_domain = 0;
    o.display = host_->display();
    o.clipboard = clipboard_;
    o.on_last_window_closed = [this] { ++last_window_closed_; };
    o.on_notice = [this](const std::string& n) {
      std::lock_guard<std::mutex> lock(mu_);
      notices_ += n + "\n";
    };
    auto s = GuiSession::Start(o);
    ASSERT_TRUE(s.ok()) << s.error().message;
    session_ = std::move(s.value());
  }

  void StartAgent() {
    AgentOptions a;
    a.display = guest_->display();
    a.host_domain = 0;
    a.vchan_socket_dir = dir_;
    a.own_domain = kDomid;
    agent_thread_ = std::thread([a, this] { agent_status_ = RunAgent(a); });
  }

  std::unique_ptr<Child> StartApp(const std::string& title, const std::string& clip = "") {
    std::vector<std::string> argv = {GUI_TEST_APP, title, "200", "100", "00ff00"};
    if (!clip.empty()) argv.push_back(clip);
    auto app = std::make_unique<Child>(argv, std::vector<std::string>{"DISPLAY=" + guest_->display()});
    EXPECT_TRUE(WaitUntil([&] { return app->OutputHas("ready"); }));
    return app;
  }

  // Waits for the framed window of the app; returns frame and content.
  void FindWindow(const std::string& title, xcb_window_t* frame, xcb_window_t* content) {
    std::string want = "[disp7] " + title;
    ASSERT_TRUE(WaitUntil([&] {
      auto w = probe_->FindByTitlePrefix(want);
      return !w.empty() && probe_->Property(w[0], "WM_NAME") == want;
    })) << "no host window titled " << want;
    *frame = probe_->FindByTitlePrefix(want)[0];
    *content = probe_->FirstChild(*frame);
    ASSERT_NE(*content, 0u);
    // Mapped on the host (so it can take focus) and showing the app's pixels.
    xcb_window_t c = *content;
    ASSERT_TRUE(WaitUntil([&] { return probe_->Viewable(c); }));
    int cx, cy;
    ASSERT_TRUE(probe_->RootPosition(c, &cx, &cy));
    ASSERT_TRUE(WaitUntil([&] { return probe_->RootPixel(cx + 100, cy + 50) == 0x00ff00; }));
  }

  void Focus(xcb_window_t frame) {
    xcb_set_input_focus(probe_->conn(), XCB_INPUT_FOCUS_POINTER_ROOT, frame, XCB_CURRENT_TIME);
    probe_->Sync();
  }

  void Chord(uint8_t key) {
    probe_->FakeKey(kCtrl, true);
    probe_->FakeKey(kShift, true);
    probe_->FakeKey(key, true);
    probe_->FakeKey(key, false);
    probe_->FakeKey(kShift, false);
    probe_->FakeKey(kCtrl, false);
  }

  std::string Notices() {
    std::lock_guard<std::mutex> lock(mu_);
    return notices_;
  }

  std::unique_ptr<XvfbServer> host_, guest_;
  std::unique_ptr<XProbe> probe_;
  std::string dir_;
  std::shared_ptr<ClipboardBuffer> clipboard_;
  std::unique_ptr<GuiSession> session_;
  std::thread agent_thread_;
  Status agent_status_;
  std::atomic<int> last_window_closed_{0};
  std::mutex mu_;
  std::string notices_;
};

TEST_F(GuiEnv, GuestWindowAppearsInLabelFrameWithPrefixedTitle) {
  StartAgent();
  StartSession();
  auto app = StartApp("guest-title");
  xcb_window_t frame, content;
  FindWindow("guest-title", &frame, &content);
  int cw, ch, fx, fy, cx, cy, fw, fh;
  ASSERT_TRUE(probe_->Geometry(content, &cw, &ch));
  EXPECT_EQ(cw, 200);
  EXPECT_EQ(ch, 100);
  ASSERT_TRUE(probe_->Geometry(frame, &fw, &fh));
  ASSERT_TRUE(probe_->RootPosition(frame, &fx, &fy));
  ASSERT_TRUE(probe_->RootPosition(content, &cx, &cy));
  // The guest's pixels arrive inside the content area...
  EXPECT_TRUE(WaitUntil([&] { return probe_->RootPixel(cx + 100, cy + 50) == 0x00ff00; }))
      << std::hex << probe_->RootPixel(cx + 100, cy + 50);
  // ...and the frame around it is the label's red, on every side.
  EXPECT_EQ(probe_->RootPixel(fx + 1, fy + 1), 0xcc0000u);
  EXPECT_EQ(probe_->RootPixel(fx + 1, cy + 50), 0xcc0000u);
  EXPECT_EQ(probe_->RootPixel(fx + fw - 1, cy + 50), 0xcc0000u);
  EXPECT_EQ(probe_->RootPixel(cx + 100, fy + fh - 1), 0xcc0000u);
  EXPECT_EQ(probe_->Property(frame, "_QUBES_LABEL_COLOR"), "0xcc0000");
  EXPECT_EQ(probe_->Property(frame, "_NET_WM_NAME"), "[disp7] guest-title");
  EXPECT_EQ(probe_->Property(frame, "WM_CLASS"), std::string("disp7:testapp\0disp7:TestApp\0", 28));
  EXPECT_TRUE(probe_->SavePng("gui_e2e_window.png", fx, fy, fw, fh));
  EXPECT_EQ(session_->stats().windows_mapped_now, 1u);
}

TEST_F(GuiEnv, InputReachesOnlyTheFocusedWindow) {
  StartAgent();
  StartSession();
  auto app = StartApp("input");
  xcb_window_t frame, content;
  FindWindow("input", &frame, &content);
  int cx, cy;
  ASSERT_TRUE(probe_->RootPosition(content, &cx, &cy));
  probe_->FakeMotion(cx + 20, cy + 10);
  // Not focused (the pointer is merely over it): the key stays on the host.
  probe_->FakeKey(kKeyB, true);
  probe_->FakeKey(kKeyB, false);
  probe_->FakeButton(1, true);
  probe_->FakeButton(1, false);
  EXPECT_TRUE(WaitUntil([&] { return app->OutputHas("button 1 20 10"); })) << app->output();
  Focus(frame);
  probe_->FakeKey(kKeyA, true);
  probe_->FakeKey(kKeyA, false);
  EXPECT_TRUE(WaitUntil([&] { return app->OutputHas("key 38"); })) << app->output();
  EXPECT_FALSE(app->OutputHas("key 56")) << app->output();
}

TEST_F(GuiEnv, ClipboardCrossesOnlyOnTheChords) {
  StartAgent();
  StartSession();
  auto app = StartApp("clip", "guest-secret");
  xcb_window_t frame, content;
  FindWindow("clip", &frame, &content);
  Focus(frame);
  // A plain 'c' is just a key for the app.
  probe_->FakeKey(kKeyC, true);
  probe_->FakeKey(kKeyC, false);
  ASSERT_TRUE(WaitUntil([&] { return app->OutputHas("key 54"); }));
  {
    std::lock_guard<std::mutex> lock(clipboard_->mu);
    EXPECT_TRUE(clipboard_->data.empty());
  }
  Chord(kKeyC);
  EXPECT_TRUE(WaitUntil([&] {
    std::lock_guard<std::mutex> lock(clipboard_->mu);
    return clipboard_->data == "guest-secret";
  }));
  EXPECT_NE(Notices().find("copied 12 bytes"), std::string::npos) << Notices();
  {
    std::lock_guard<std::mutex> lock(clipboard_->mu);
    clipboard_->data = "host-paste";
    clipboard_->source_domain = "other";
  }
  Chord(kKeyV);
  EXPECT_TRUE(WaitUntil([&] { return Notices().find("pasted 10 bytes") != std::string::npos; }));
  // The guest's CLIPBOARD now holds the pasted text.
  XProbe guest(guest_->display());
  xcb_window_t w = xcb_generate_id(guest.conn());
  xcb_create_window(guest.conn(), XCB_COPY_FROM_PARENT, w, guest.root(), 0, 0, 1, 1, 0,
                    XCB_WINDOW_CLASS_INPUT_OUTPUT, XCB_COPY_FROM_PARENT, 0, nullptr);
  std::string got;
  EXPECT_TRUE(WaitUntil([&] {
    xcb_convert_selection(guest.conn(), w, guest.Atom("CLIPBOARD"), guest.Atom("UTF8_STRING"),
                          guest.Atom("TESTSEL"), XCB_CURRENT_TIME);
    guest.Sync();
    if (!WaitUntil([&] { return !guest.Property(w, "TESTSEL").empty(); },
                   std::chrono::milliseconds(200))) {
      return false;
    }
    got = guest.Property(w, "TESTSEL");
    return got == "host-paste";
  })) << got;
  // The chord keys themselves never reached the app: exactly the one plain 'c'.
  std::string out = app->output();
  size_t first = out.find("key 54");
  EXPECT_EQ(out.find("key 54", first + 1), std::string::npos) << out;
  EXPECT_EQ(out.find("key 55"), std::string::npos) << out;
}

TEST_F(GuiEnv, ClosingTheWindowReportsTheLastWindowClosed) {
  StartAgent();
  StartSession();
  auto app = StartApp("closeme");
  xcb_window_t frame, content;
  FindWindow("closeme", &frame, &content);
  // What a window manager sends when the user clicks the close button.
  xcb_client_message_event_t msg{};
  msg.response_type = XCB_CLIENT_MESSAGE;
  msg.format = 32;
  msg.window = frame;
  msg.type = probe_->Atom("WM_PROTOCOLS");
  msg.data.data32[0] = probe_->Atom("WM_DELETE_WINDOW");
  xcb_send_event(probe_->conn(), 0, frame, 0, reinterpret_cast<const char*>(&msg));
  probe_->Sync();
  EXPECT_TRUE(WaitUntil([&] { return app->OutputHas("closed"); }));
  EXPECT_TRUE(WaitUntil([&] { return last_window_closed_ == 1; }));
  EXPECT_TRUE(WaitUntil([&] { return probe_->FindByTitlePrefix("[disp7]").empty(); }));
}

TEST_F(GuiEnv, AgentGoingAwayEndsTheSessionCleanly) {
  StartAgent();
  StartSession();
  auto app = StartApp("bye");
  xcb_window_t frame, content;
  FindWindow("bye", &frame, &content);
  app.reset();
  guest_.reset();  // the domain's display dies: the agent exits, the channel closes
  ASSERT_TRUE(WaitUntil([&] { return session_->finished(); }));
  Status st = session_->Wait();
  EXPECT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(probe_->FindByTitlePrefix("[disp7]").empty());
  EXPECT_GE(last_window_closed_.load(), 1);
}

// The test plays a hostile agent: it is the vchan server the daemon connects to.
class GuiHostile : public GuiEnv {
 protected:
  void Listen() {
    vchan::Options o;
    o.socket_dir = dir_;
    o.own_domain = kDomid;
    auto v = vchan::Vchan::Server(0, kVchanPort, o);
    ASSERT_TRUE(v.ok()) << v.error().message;
    agent_ = std::move(v.value());
  }
  void Handshake(uint32_t version = kVersion) {
    Listen();
    StartSession();
    ASSERT_TRUE(agent_->Send(&version, 4).ok());
    uint32_t host_version = 0;
    XConf conf{};
    ASSERT_TRUE(agent_->Recv(&host_version, 4).ok());
    ASSERT_TRUE(agent_->Recv(&conf, sizeof(conf)).ok());
    EXPECT_EQ(host_version, kVersion);
    EXPECT_EQ(conf.w, 1024u);
    EXPECT_EQ(conf.h, 768u);
  }
  void Send(const std::vector<uint8_t>& b) { (void)agent_->Send(b.data(), b.size()); }
  void CreateMapped(uint32_t id, uint32_t w, uint32_t h) {
    Send(Encode(MSG_CREATE, id, MsgCreate{10, 10, w, h, 0, 0}));
    Send(Encode(MSG_MAP, id, MsgMapInfo{0, 0}));
  }
  void Pixels(uint32_t id, int32_t x, int32_t y, uint32_t w, uint32_t h, uint8_t fill) {
    std::vector<uint8_t> body(sizeof(MsgPixels) + size_t{w} * h * 4, fill);
    MsgPixels r{x, y, w, h};
    std::memcpy(body.data(), &r, sizeof(r));
    Send(EncodeMessage(MSG_PIXELS, id, body.data(), body.size()));
  }
  // The session must end with a protocol error, leave no window behind, and the host
  // display must still be fine.
  void ExpectRefused() {
    ASSERT_TRUE(WaitUntil([&] { return session_->finished(); }));
    Status st = session_->Wait();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("gui protocol error"), std::string::npos)
        << st.error().message;
    EXPECT_TRUE(probe_->ok());
    EXPECT_TRUE(probe_->FindByTitlePrefix("[disp7]").empty());
  }
  void TearDown() override {
    if (agent_) agent_->Close();
    GuiEnv::TearDown();
    agent_.reset();
  }
  vchan::VchanPtr agent_;
};

TEST_F(GuiHostile, GarbageIsRefused) {
  Handshake();
  std::mt19937 rng(7);
  std::vector<uint8_t> junk(4096);
  for (auto& b : junk) b = static_cast<uint8_t>(rng());
  Send(junk);
  ExpectRefused();
}

TEST_F(GuiHostile, OtherMajorVersionIsRefused) {
  Listen();
  StartSession();
  uint32_t v = 2u << 16;
  (void)agent_->Send(&v, 4);
  ExpectRefused();
}

TEST_F(GuiHostile, OversizedWindowIsRefused) {
  Handshake();
  Send(Encode(MSG_CREATE, 1, MsgCreate{0, 0, kMaxWindowWidth + 1, 100, 0, 0}));
  ExpectRefused();
}

TEST_F(GuiHostile, RectangleOutsideItsWindowIsRefused) {
  Handshake();
  CreateMapped(1, 100, 100);
  Pixels(1, 0, 0, 100, 100, 0x40);
  Pixels(1, 50, 50, 51, 10, 0x40);
  ExpectRefused();
  EXPECT_EQ(last_window_closed_.load(), 1);
}

TEST_F(GuiHostile, UnknownTypeAndUnknownWindowAreRefused) {
  Handshake();
  Send(EncodeMessage(999, 1));
  ExpectRefused();
}

TEST_F(GuiHostile, MessageForAWindowNeverCreatedIsRefused) {
  Handshake();
  Send(Encode(MSG_MAP, 42, MsgMapInfo{0, 0}));
  ExpectRefused();
}

TEST_F(GuiHostile, LongAndControlCharacterTitlesAreSanitized) {
  Handshake();
  CreateMapped(1, 100, 100);
  MsgWmName name;
  std::memset(name.data, 'A', sizeof(name.data));  // no NUL at all
  std::memcpy(name.data, "\x1b[2J\xff", 5);
  Send(Encode(MSG_WMNAME, 1, name));
  std::string want = "[disp7] _[2J_" + std::string(122, 'A');
  EXPECT_TRUE(WaitUntil([&] {
    auto w = probe_->FindByTitlePrefix("[disp7]");
    return !w.empty() && probe_->Property(w[0], "WM_NAME") == want;
  }));
  EXPECT_FALSE(session_->finished());
}

TEST_F(GuiHostile, FloodOfUpdatesIsDrawnWithoutHarm) {
  Handshake();
  CreateMapped(1, 400, 300);
  constexpr int kUpdates = 1000;
  std::thread flooder([&] {
    for (int i = 0; i < kUpdates; ++i) {
      Pixels(1, (i * 7) % 300, (i * 3) % 200, 100, 100, static_cast<uint8_t>(i));
    }
  });
  flooder.join();
  EXPECT_TRUE(WaitUntil([&] { return session_->stats().pixel_updates == kUpdates; }))
      << session_->stats().pixel_updates;
  EXPECT_FALSE(session_->finished());
  agent_->Close();  // the agent goes away: a clean end
  ASSERT_TRUE(WaitUntil([&] { return session_->finished(); }));
  EXPECT_TRUE(session_->Wait().ok());
}

TEST_F(GuiHostile, UnsolicitedClipboardDataIsDropped) {
  Handshake();
  CreateMapped(1, 50, 50);
  std::string data = "pushed-by-guest";
  Send(EncodeMessage(MSG_CLIPBOARD_DATA, 0, data.data(), data.size()));
  EXPECT_TRUE(WaitUntil([&] { return session_->stats().clipboard_dropped == 1; }));
  std::lock_guard<std::mutex> lock(clipboard_->mu);
  EXPECT_TRUE(clipboard_->data.empty());
  EXPECT_FALSE(session_->finished());
}

TEST_F(GuiHostile, SecondCreateOfAnIdIsRefused) {
  Handshake();
  CreateMapped(1, 50, 50);
  Send(Encode(MSG_CREATE, 1, MsgCreate{0, 0, 10, 10, 0, 0}));
  ExpectRefused();
}

TEST_F(GuiHostile, DaemonBinaryExitsWithAnErrorNotACrash) {
  Listen();
  Child daemon({GUI_DAEMON_BIN, "--domid", std::to_string(kDomid), "--name", "disp7",
                "--socket-dir", dir_, "--own-domain", "0", "--display", host_->display()});
  uint32_t v = kVersion;
  ASSERT_TRUE(agent_->Send(&v, 4).ok());
  uint8_t reply[4 + sizeof(XConf)];
  ASSERT_TRUE(agent_->Recv(reply, sizeof(reply)).ok());
  Send(Encode(MSG_CREATE, 1, MsgCreate{0, 0, 100, 100, 0, 0}));
  MsgHeader bad{MSG_PIXELS, 1, 0xffffffffu};
  Send(std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&bad),
                            reinterpret_cast<uint8_t*>(&bad) + sizeof(bad)));
  int status = 0;
  ASSERT_TRUE(WaitUntil([&] { return daemon.Exited(&status); }));
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

}  // namespace
}  // namespace odyssey::gui
