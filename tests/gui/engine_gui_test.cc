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
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/io.h"
#include "gui/xvfb.h"
#include "tests/engine/engine_test_util.h"
#include "tests/gui/gui_test_util.h"
#include "tests/handlers/test_util.h"

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
    auto read = ReadFileToString(e.path() / "cmdline");  // fails when it just exited
    if (!read.ok()) continue;
    std::string cmd = std::move(*read);
    for (char& c : cmd)
      if (c == '\0') c = ' ';
    if (std::to_string(::getpid()) != pid && cmd.find(needle) != std::string::npos) ++n;
  }
  return n;
}

// `odyssey open FILE` on the test desktop: the CLI runs on a thread until the disposable
// ends; the window of the viewer qubes.OpenInVM started in it is found by its title
// "[dispN] BASE…". Destroying it before the CLI ended kills the disposable first.
struct OpenedWindow {
  std::thread cli;
  std::shared_ptr<CliResult> result = std::make_shared<CliResult>();
  std::string title, name;  // "[dispN] …", "dispN"
  xcb_window_t frame = 0;
  std::function<void()> kill;  // asks odysseyd to kill the disposable
  OpenedWindow() = default;
  OpenedWindow(OpenedWindow&&) = default;
  ~OpenedWindow() {
    if (!cli.joinable()) return;
    if (kill) kill();
    cli.join();
  }
};

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

  // Runs `odyssey open doc` with DISPLAY set to this desktop and waits for its window.
  OpenedWindow Open(const std::string& doc) {
    ::setenv("DISPLAY", desktop_->display().c_str(), 1);
    ::unsetenv("XAUTHORITY");
    OpenedWindow w;
    auto done = std::make_shared<std::atomic<bool>>(false);
    w.cli = std::thread([d = daemon_.get(), doc, done, r = w.result] {
      *r = d->Cli({"open", doc});
      *done = true;
    });
    const std::string base = std::filesystem::path(doc).filename();
    WaitUntil(
        [&] {
          for (auto f : probe_->FindByTitlePrefix("[disp")) {
            std::string t = probe_->Property(f, "WM_NAME");
            if (t.find("] " + base) != std::string::npos) w.title = t;
          }
          return !w.title.empty() || *done;
        },
        std::chrono::seconds(90));
    if (w.title.empty()) {
      w.cli.join();
      ADD_FAILURE() << "no window for " << base << "; odyssey open exited "
                    << w.result->exit_code << ": " << w.result->err;
      return w;
    }
    w.name = w.title.substr(1, w.title.find(']') - 1);
    w.kill = [d = daemon_.get(), name = w.name] {
      (void)d->Client().Request({{"op", "kill"}, {"name", name}});
    };
    w.frame = FindWindow(w.title);
    return w;
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

TEST_F(EngineGuiTest, OpenPdfRendersItInMupdfAndClosingDestroysTheDisposable) {
  if (!OnPath("mupdf")) GTEST_SKIP() << "mupdf is not installed (scripts/deps.d/gui.txt: apt-get install mupdf)";
  handlers::testing::TempDir dir;
  std::string base = "report-" + std::to_string(::getpid()) + ".pdf";
  // One 300x200 pt page: white, a (0.2, 0.3, 0.8) block of 150x66 pt, a line of text.
  handlers::testing::WritePdf(dir / base, 1);
  OpenedWindow w = Open(dir / base);
  ASSERT_NE(w.frame, 0u) << w.result->err;
  // mupdf's own title: "NAME - PAGE/PAGES (DPI dpi)".
  EXPECT_EQ(w.title.rfind("[" + w.name + "] " + base + " - 1/1 (", 0), 0u) << w.title;
  CheckFrame(w.frame, w.title, "engine_gui_open_pdf.png");
  // The page is rendered: the block's colour fills a good part of the window's content
  // (at mupdf's default 100 dpi, about 208x92 px).
  xcb_window_t content = probe_->FirstChild(w.frame);
  int cx, cy, cw, ch;
  ASSERT_TRUE(probe_->RootPosition(content, &cx, &cy));
  ASSERT_TRUE(probe_->Geometry(content, &cw, &ch));
  size_t block = 0, white = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        block = white = 0;
        for (uint32_t p : probe_->RootPixels(cx, cy, cw, ch)) {
          auto near = [p](int r, int g, int b) {
            return std::abs(static_cast<int>(p >> 16) - r) <= 8 &&
                   std::abs(static_cast<int>((p >> 8) & 0xff) - g) <= 8 &&
                   std::abs(static_cast<int>(p & 0xff) - b) <= 8;
          };
          block += near(51, 77, 204);
          white += p == 0xffffff;
        }
        return block >= 10000 && white >= 10000;
      },
      std::chrono::seconds(30)))
      << block << " block pixels, " << white << " white pixels in " << cw << "x" << ch;
  int fx, fy, fw, fh;  // the screenshot again, now that the page is drawn
  ASSERT_TRUE(probe_->RootPosition(w.frame, &fx, &fy) && probe_->Geometry(w.frame, &fw, &fh));
  EXPECT_TRUE(probe_->SavePng("engine_gui_open_pdf.png", fx, fy, fw, fh));

  Close(w.frame);
  w.cli.join();
  EXPECT_EQ(w.result->exit_code, 0) << w.result->err;
  EXPECT_NE(w.result->err.find("received " + base), std::string::npos) << w.result->err;
  EXPECT_NE(w.result->err.find(base + " (application/pdf) opens with mupdf"), std::string::npos)
      << w.result->err;
  EXPECT_FALSE(std::filesystem::exists(dir / (base + ".edited"))) << "nothing was edited";
  ExpectGone(w.name);
  EXPECT_EQ(CountProcesses(base), 0) << "the viewer is gone with its disposable";
}

// Text goes to xmessage, titled with the file's name; its words are drawn.
TEST_F(EngineGuiTest, OpenTextShowsItInXmessage) {
  handlers::testing::TempDir dir;
  std::string base = "notes-" + std::to_string(::getpid()) + ".txt";
  handlers::testing::WriteText(dir / base, "Meeting notes: nothing secret here.\n");
  OpenedWindow w = Open(dir / base);
  ASSERT_NE(w.frame, 0u) << w.result->err;
  EXPECT_EQ(w.title, "[" + w.name + "] " + base);
  CheckFrame(w.frame, w.title, "engine_gui_open_text.png");
  Close(w.frame);
  w.cli.join();
  EXPECT_EQ(w.result->exit_code, 0) << w.result->err;
  EXPECT_NE(w.result->err.find(base + " (text/plain) opens with xmessage"), std::string::npos)
      << w.result->err;
  ExpectGone(w.name);
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
      auto read = ReadFileToString(e.path() / "cmdline");
      if (!read.ok()) continue;
      const std::string& cmd = *read;
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

// The process backend has no GUI channel: `odyssey open` with DISPLAY set says why no
// window comes and what to do, then views the file headless as before.
TEST(EngineGuiProcessBackendTest, OpenSaysWhyNoWindowAppearsAndRunsHeadless) {
  TestDaemon d(Conf{{"backend", "process"}, {"pool_size", "1"}});
  ASSERT_TRUE(d.Start()) << d.Log();
  handlers::testing::TempDir dir;
  handlers::testing::WriteText(dir / "notes.txt", "hello\n");
  ::setenv("DISPLAY", ":99", 1);  // never opened: the process backend shows nothing
  CliResult r = d.Cli({"open", dir / "notes.txt"});
  ::unsetenv("DISPLAY");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("no window on :99"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("run odysseyd as root"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("received notes.txt (6 bytes)"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace odyssey::engine::testing
