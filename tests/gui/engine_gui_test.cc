// GUI disposables end to end: a private Xvfb as the user's desktop, a real odysseyd on the
// default backend (hal/native as root), the real CLI. A program run in a disposable with the
// "gui" request field, and `odyssey open FILE` with DISPLAY set, appear on that desktop as
// windows in the red disposable frame titled "[dispN] …" (PNG screenshots are written to the
// working directory); closing the window destroys the disposable and leaves no process.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gui/xvfb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/gui/gui_test_util.h"

namespace odyssey::engine::testing {
namespace {

using gui::XvfbServer;
using gui::testing::WaitUntil;
using gui::testing::XProbe;

bool OnPath(const char* name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t c = path.find(':', pos);
    if (c == std::string::npos) c = path.size();
    if (::access((path.substr(pos, c - pos) + "/" + name).c_str(), X_OK) == 0) return true;
    pos = c + 1;
  }
  return false;
}

// Processes whose command line contains needle (NULs read as spaces).
int CountProcesses(const std::string& needle) {
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string pid = e.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(f)), {});
    for (char& c : cmd)
      if (c == '\0') c = ' ';
    if (std::to_string(::getpid()) != pid && cmd.find(needle) != std::string::npos) ++n;
  }
  return n;
}

class EngineGuiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "GUI disposables are tested on hal/native, which needs root";
    if (!XvfbServer::Available()) GTEST_SKIP() << "Xvfb is not installed";
    if (!OnPath("xmessage")) GTEST_SKIP() << "xmessage is not installed (package x11-utils)";
    auto x = XvfbServer::Start(1280, 1024);
    ASSERT_TRUE(x.ok()) << x.error().message;
    desktop_ = std::move(*x);
    probe_ = std::make_unique<XProbe>(desktop_->display());
    ASSERT_TRUE(probe_->ok());
    // The shipped services (handlers/), as an installed odysseyd uses them.
    std::string services = std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services";
    daemon_ = std::make_unique<TestDaemon>(
        Conf{{"backend", "auto"}, {"pool_size", "1"}, {"service_path", services}});
    ::chmod(daemon_->dir().c_str(), 0711);  // hal/native's mapped ids traverse it
    ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
    auto ping = daemon_->Client().Request({{"op", "ping"}});
    ASSERT_TRUE(ping.ok());
    std::string backend = (*ping)["backend"];
    if (backend.rfind("hal native", 0) != 0)
      GTEST_SKIP() << "odysseyd uses the backend '" << backend << "', which has no vchan for the GUI";
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::fprintf(stderr, "odysseyd log:\n%s\n", daemon_->Log().c_str());
  }

  // Waits for the framed host window titled exactly "[name] title"; returns its frame.
  xcb_window_t FindWindow(const std::string& want) {
    xcb_window_t frame = 0;
    EXPECT_TRUE(WaitUntil(
        [&] {
          auto w = probe_->FindByTitlePrefix(want);
          if (w.empty() || probe_->Property(w[0], "WM_NAME") != want) return false;
          xcb_window_t content = probe_->FirstChild(w[0]);
          if (!content || !probe_->Viewable(content)) return false;
          frame = w[0];
          return true;
        },
        std::chrono::seconds(90)))
        << "no host window titled " << want;
    return frame;
  }

  // The red frame on every side, the title prefix, and a screenshot.
  void CheckFrame(xcb_window_t frame, const std::string& title, const std::string& png) {
    xcb_window_t content = probe_->FirstChild(frame);
    int fx, fy, fw, fh, cx, cy, cw, ch;
    ASSERT_TRUE(probe_->RootPosition(frame, &fx, &fy));
    ASSERT_TRUE(probe_->Geometry(frame, &fw, &fh));
    ASSERT_TRUE(probe_->RootPosition(content, &cx, &cy));
    ASSERT_TRUE(probe_->Geometry(content, &cw, &ch));
    EXPECT_EQ(probe_->RootPixel(fx + 1, fy + 1), 0xcc0000u);
    EXPECT_EQ(probe_->RootPixel(fx + 1, cy + ch / 2), 0xcc0000u);
    EXPECT_EQ(probe_->RootPixel(fx + fw - 1, cy + ch / 2), 0xcc0000u);
    EXPECT_EQ(probe_->RootPixel(cx + cw / 2, fy + fh - 1), 0xcc0000u);
    EXPECT_EQ(probe_->Property(frame, "_QUBES_LABEL_COLOR"), "0xcc0000");
    EXPECT_EQ(probe_->Property(frame, "WM_NAME").rfind("[disp", 0), 0u);
    EXPECT_EQ(probe_->Property(frame, "_NET_WM_NAME"), title);
    // The guest's pixels arrive (xmessage's text): the content is not one flat colour.
    EXPECT_TRUE(WaitUntil(
        [&] {
          std::set<uint32_t> colours;
          for (int y = 0; y < ch && colours.size() < 2; y += 3)
            for (int x = 0; x < cw && colours.size() < 2; x += 3)
              colours.insert(probe_->RootPixel(cx + x, cy + y));
          return colours.size() >= 2;
        },
        std::chrono::seconds(30)))
        << "the window shows no guest pixels";
    EXPECT_TRUE(probe_->SavePng(png, fx, fy, fw, fh));
  }

  // What a window manager sends when the user clicks the close button.
  void Close(xcb_window_t frame) {
    xcb_client_message_event_t msg{};
    msg.response_type = XCB_CLIENT_MESSAGE;
    msg.format = 32;
    msg.window = frame;
    msg.type = probe_->Atom("WM_PROTOCOLS");
    msg.data.data32[0] = probe_->Atom("WM_DELETE_WINDOW");
    xcb_send_event(probe_->conn(), 0, frame, 0, reinterpret_cast<const char*>(&msg));
    probe_->Sync();
  }

  // Nothing of the disposable is left: not in `ls`, no gui-daemon for it, no window.
  void ExpectGone(const std::string& name) {
    EXPECT_TRUE(WaitUntil([&] { return CountProcesses("--name=" + name + " ") == 0; },
                          std::chrono::seconds(30)));
    auto ls = daemon_->Client().Request({{"op", "ls"}});
    ASSERT_TRUE(ls.ok());
    for (auto& d : (*ls)["domains"]) EXPECT_NE(d["name"], name) << ls->dump();
    // The X server drops a dead client's windows when it gets to the closed socket.
    EXPECT_TRUE(WaitUntil([&] { return probe_->FindByTitlePrefix("[" + name + "]").empty(); },
                          std::chrono::seconds(30)));
  }

  std::unique_ptr<XvfbServer> desktop_;
  std::unique_ptr<XProbe> probe_;
  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(EngineGuiTest, ProgramWindowAppearsFramedAndClosingItDestroysTheDisposable) {
  auto client = daemon_->Client();
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  std::string title = "engine-gui-" + std::to_string(::getpid());
  nlohmann::json req = {{"op", "run"},
                        {"argv", {"xmessage", "-title", title, "hello from a disposable"}},
                        {"gui", {{"display", desktop_->display()}}}};
  ASSERT_TRUE(client.Send(req, {null.get(), null.get(), null.get()}).ok());
  auto started = client.Receive();
  ASSERT_TRUE(started.ok());
  ASSERT_EQ((*started)["event"], "started") << started->dump();
  std::string name = (*started)["name"];
  std::string want = "[" + name + "] " + title;
  xcb_window_t frame = FindWindow(want);
  ASSERT_NE(frame, 0u);
  CheckFrame(frame, want, "engine_gui_window.png");
  EXPECT_EQ(CountProcesses("--name=" + name + " "), 1) << "one gui-daemon per disposable";

  Close(frame);
  auto done = client.Receive();
  ASSERT_TRUE(done.ok());
  EXPECT_EQ((*done)["event"], "exit") << done->dump();
  EXPECT_EQ((*done)["destroyed"], true) << done->dump();
  ExpectGone(name);
}

TEST_F(EngineGuiTest, OpenDocumentShowsItsViewerAndClosingReturnsTheCli) {
  std::string dir = MakeTempDir("gui-open");
  std::string doc = dir + "/report-" + std::to_string(::getpid()) + ".pdf";
  std::filesystem::copy_file(std::string(ODYSSEY_SOURCE_DIR) + "/samples/sample.pdf", doc);
  ::setenv("DISPLAY", desktop_->display().c_str(), 1);
  ::unsetenv("XAUTHORITY");
  CliResult r;
  std::atomic<bool> cli_done{false};
  std::thread cli([&] {
    r = daemon_->Cli({"open", doc});
    cli_done = true;
  });
  std::string base = std::filesystem::path(doc).filename();
  std::vector<xcb_window_t> found;
  EXPECT_TRUE(WaitUntil(
      [&] {
        found.clear();
        for (auto w : probe_->FindByTitlePrefix("[disp"))
          if (probe_->Property(w, "WM_NAME").find("] " + base) != std::string::npos) found.push_back(w);
        return !found.empty() || cli_done;
      },
      std::chrono::seconds(90)));
  if (found.empty()) {
    cli.join();
    FAIL() << "no window for " << base << "; odyssey open exited " << r.exit_code << ": " << r.err;
  }
  std::string title = probe_->Property(found[0], "WM_NAME");
  std::string name = title.substr(1, title.find(']') - 1);
  xcb_window_t frame = FindWindow(title);
  ASSERT_NE(frame, 0u);
  CheckFrame(frame, title, "engine_gui_open.png");

  Close(frame);
  cli.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("received " + base), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(doc + ".edited")) << "nothing was edited";
  ExpectGone(name);
  std::filesystem::remove_all(dir);
}

// Another user's request: the gui-daemon becomes that user before it opens the display.
TEST_F(EngineGuiTest, GuiDaemonRunsAsTheRequestingUser) {
  constexpr uid_t kUser = 65534;
  daemon_.reset();  // a daemon that serves uid 65534 on a socket it can reach
  std::string services = std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services";
  daemon_ = std::make_unique<TestDaemon>(Conf{{"backend", "auto"},
                                              {"pool_size", "1"},
                                              {"service_path", services},
                                              {"allowed_uids", std::to_string(kUser)},
                                              {"socket_mode", "0666"}});
  ::chmod(daemon_->dir().c_str(), 0711);
  ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
  ::chmod((daemon_->dir() + "/run").c_str(), 0755);
  std::string title = "as-user-" + std::to_string(::getpid());
  int names[2];
  ASSERT_EQ(::pipe(names), 0);
  pid_t child = ::fork();
  if (child == 0) {  // the user: asks for the window, reports the name, waits for the end
    ::close(names[0]);
    if (::setgid(kUser) != 0 || ::setuid(kUser) != 0) ::_exit(10);
    auto c = AdminClient::Connect(daemon_->socket());
    if (!c.ok()) ::_exit(11);
    int null = ::open("/dev/null", O_RDWR);
    nlohmann::json req = {{"op", "run"},
                          {"argv", {"xmessage", "-title", title, "hello"}},
                          {"gui", {{"display", desktop_->display()}}}};
    if (!c->Send(req, {null, null, null}).ok()) ::_exit(12);
    auto started = c->Receive();
    if (!started.ok() || (*started)["event"] != "started") ::_exit(13);
    std::string name = (*started)["name"].get<std::string>() + "\n";
    if (::write(names[1], name.data(), name.size()) != static_cast<ssize_t>(name.size())) ::_exit(14);
    auto done = c->Receive();
    ::_exit(done.ok() && (*done)["event"] == "exit" && (*done)["destroyed"] == true ? 0 : 15);
  }
  ::close(names[1]);
  std::string name;
  char ch;
  while (::read(names[0], &ch, 1) == 1 && ch != '\n') name += ch;
  ::close(names[0]);
  ASSERT_FALSE(name.empty()) << "the user's request failed";
  xcb_window_t frame = FindWindow("[" + name + "] " + title);
  if (frame) {
    // The one gui-daemon of this disposable runs with the user's ids, not root's.
    int found = 0;
    for (auto& e : std::filesystem::directory_iterator("/proc")) {
      std::ifstream cmdf(e.path() / "cmdline");
      std::string cmd((std::istreambuf_iterator<char>(cmdf)), {});
      if (cmd.find(std::string("--name=") + name + '\0') == std::string::npos) continue;
      std::ifstream st(e.path() / "status");
      std::string line;
      while (std::getline(st, line)) {
        if (line.rfind("Uid:", 0) == 0 || line.rfind("Gid:", 0) == 0) {
          EXPECT_EQ(line.substr(5), "65534\t65534\t65534\t65534") << line;
        }
      }
      ++found;
    }
    EXPECT_EQ(found, 1);
    Close(frame);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << std::hex << status;
  ExpectGone(name);
}

TEST_F(EngineGuiTest, MalformedGuiFieldIsRefused) {
  auto client = daemon_->Client();
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  for (const nlohmann::json& bad : {nlohmann::json("yes"), nlohmann::json({{"display", 7}}),
                                    nlohmann::json({{"display", ":0; rm -rf /"}}),
                                    nlohmann::json({{"display", ":0"}, {"xauthority", "rel/path"}})}) {
    nlohmann::json req = {{"op", "run"}, {"argv", {"true"}}, {"gui", bad}};
    ASSERT_TRUE(client.Send(req, {null.get(), null.get(), null.get()}).ok());
    auto r = client.Receive();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ((*r)["ok"], false) << r->dump();
    EXPECT_NE((*r)["error"].get<std::string>().find("gui"), std::string::npos) << r->dump();
  }
  // The daemon still serves.
  EXPECT_TRUE(daemon_->Client().Request({{"op", "ping"}}).ok());
}

}  // namespace
}  // namespace odyssey::engine::testing
