// GUI benchmarks under two private Xvfb servers (host and guest), the socket vchan, a
// gui-agent and a GuiSession in this process:
//  - DrawToHostPixel: a guest client fills a 50x50 square with a new colour; time until the
//    host display shows it (guest draw -> damage -> agent -> vchan -> daemon -> host X).
//  - FullWindow800x600: the same for the whole 800x600 window; items/s = updates/s with
//    every update awaited on the host (no frame skipped).
//  - MemoryPerWindow: RSS growth of the host X server (the daemon's pixmaps live there)
//    and of this process (daemon + agent) per extra mapped 800x600 window.
#include <benchmark/benchmark.h>
#include <xcb/xcb.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "gui/agent/agent.h"
#include "gui/daemon/gui_session.h"
#include "gui/xvfb.h"
#include "tests/gui/gui_test_util.h"

namespace odyssey::gui {
namespace {

using testing::WaitUntil;
using testing::XProbe;

long RssKib(pid_t pid) {
  std::ifstream in("/proc/" + (pid ? std::to_string(pid) : std::string("self")) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// One host + guest pair with a running session, shared by all benchmarks.
struct Rig {
  std::unique_ptr<XvfbServer> host, guest;
  std::string dir;
  std::unique_ptr<GuiSession> session;
  std::thread agent;
  std::unique_ptr<XProbe> probe;
  xcb_connection_t* gc = nullptr;  // guest client
  xcb_screen_t* gs = nullptr;

  bool Start() {
    auto h = XvfbServer::Start(1280, 1024);
    auto g = XvfbServer::Start(1280, 1024);
    if (!h.ok() || !g.ok()) return false;
    host = std::move(h.value());
    guest = std::move(g.value());
    char tmpl[] = "/tmp/odyssey-gui-bench.XXXXXX";
    if (!mkdtemp(tmpl)) return false;
    dir = tmpl;
    AgentOptions a{guest->display(), 0, dir, 9};
    agent = std::thread([a] { (void)RunAgent(a); });
    SessionOptions o;
    o.domid = 9;
    o.domain_name = "bench";
    o.vchan_socket_dir = dir;
    o.own_domain = 0;
    o.display = host->display();
    o.on_notice = [](const std::string&) {};
    auto s = GuiSession::Start(o);
    if (!s.ok()) return false;
    session = std::move(s.value());
    probe = std::make_unique<XProbe>(host->display());
    gc = xcb_connect(guest->display().c_str(), nullptr);
    gs = xcb_setup_roots_iterator(xcb_get_setup(gc)).data;
    return probe->ok() && !xcb_connection_has_error(gc);
  }

  xcb_window_t NewWindow(uint16_t w, uint16_t h, const std::string& title) {
    xcb_window_t win = xcb_generate_id(gc);
    uint32_t values[] = {0x202020};
    xcb_create_window(gc, XCB_COPY_FROM_PARENT, win, gs->root, 0, 0, w, h, 0,
                      XCB_WINDOW_CLASS_INPUT_OUTPUT, gs->root_visual, XCB_CW_BACK_PIXEL, values);
    xcb_change_property(gc, XCB_PROP_MODE_REPLACE, win, XCB_ATOM_WM_NAME, XCB_ATOM_STRING, 8,
                        static_cast<uint32_t>(title.size()), title.data());
    xcb_map_window(gc, win);
    xcb_flush(gc);
    return win;
  }

  void Fill(xcb_window_t win, uint32_t color, uint16_t w, uint16_t h) {
    xcb_gcontext_t g = xcb_generate_id(gc);
    xcb_create_gc(gc, g, win, XCB_GC_FOREGROUND, &color);
    xcb_rectangle_t r{0, 0, w, h};
    xcb_poly_fill_rectangle(gc, win, g, 1, &r);
    xcb_free_gc(gc, g);
    xcb_flush(gc);
  }

  ~Rig() {
    session.reset();
    if (agent.joinable()) agent.join();
    if (gc) xcb_disconnect(gc);
    probe.reset();
    guest.reset();
    host.reset();
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
};

// Made on first use; destroyed at exit, which stops the session, the agent and both Xvfb.
Rig* GetRig() {
  static std::unique_ptr<Rig> rig = [] {
    auto r = std::make_unique<Rig>();
    if (!r->Start()) {
      std::fprintf(stderr, "gui_bench: cannot start Xvfb/agent/session\n");
      r.reset();
      std::exit(1);
    }
    return r;
  }();
  return rig.get();
}

// Finds the content window of the host frame titled "[bench] title"; returns its position.
bool HostContent(Rig* rig, const std::string& title, int* x, int* y) {
  std::string want = "[bench] " + title;
  if (!WaitUntil([&] {
        auto w = rig->probe->FindByTitlePrefix(want);
        return !w.empty() && rig->probe->Property(w[0], "WM_NAME") == want;
      })) {
    return false;
  }
  xcb_window_t content = rig->probe->FirstChild(rig->probe->FindByTitlePrefix(want)[0]);
  return rig->probe->RootPosition(content, x, y);
}

void RunColourLoop(benchmark::State& state, uint16_t w, uint16_t h, const std::string& title) {
  Rig* rig = GetRig();
  xcb_window_t win = rig->NewWindow(800, 600, title);
  int cx, cy;
  if (!HostContent(rig, title, &cx, &cy)) {
    state.SkipWithError("window did not appear on the host");
    return;
  }
  uint32_t color = 0x100000;
  for (auto _ : state) {
    color = (color + 0x010203) & 0xffffff;
    rig->Fill(win, color, w, h);
    // The last row arrives last: wait for the bottom-right pixel of the drawn area.
    while (rig->probe->RootPixel(cx + w - 1, cy + h - 1) != color) {
    }
  }
  state.SetItemsProcessed(state.iterations());
  xcb_destroy_window(rig->gc, win);
  xcb_flush(rig->gc);
  // Leave no window behind for the next benchmark.
  WaitUntil([&] { return rig->session->stats().windows_mapped_now == 0; });
}

void BM_DrawToHostPixel(benchmark::State& state) { RunColourLoop(state, 50, 50, "latency"); }
BENCHMARK(BM_DrawToHostPixel)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(2.0);

void BM_FullWindow800x600(benchmark::State& state) { RunColourLoop(state, 800, 600, "full"); }
BENCHMARK(BM_FullWindow800x600)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

void BM_MemoryPerWindow(benchmark::State& state) {
  Rig* rig = GetRig();
  const int n = static_cast<int>(state.range(0));
  WaitUntil([&] { return rig->session->stats().windows_mapped_now == 0; });
  for (auto _ : state) {
    uint64_t before_mapped = rig->session->stats().windows_mapped_now;
    long x0 = RssKib(rig->host->pid()), p0 = RssKib(0);
    std::vector<xcb_window_t> wins;
    for (int i = 0; i < n; ++i) {
      wins.push_back(rig->NewWindow(800, 600, "mem" + std::to_string(i)));
      rig->Fill(wins.back(), 0x336699, 800, 600);
    }
    WaitUntil([&] { return rig->session->stats().windows_mapped_now == before_mapped + n; });
    int cx, cy;
    HostContent(rig, "mem" + std::to_string(n - 1), &cx, &cy);
    WaitUntil([&] { return rig->probe->RootPixel(cx + 799, cy + 599) == 0x336699; });
    long x1 = RssKib(rig->host->pid()), p1 = RssKib(0);
    state.counters["host_x_KiB_per_window"] = static_cast<double>(x1 - x0) / n;
    state.counters["process_KiB_per_window"] = static_cast<double>(p1 - p0) / n;
    for (auto w : wins) xcb_destroy_window(rig->gc, w);
    xcb_flush(rig->gc);
    WaitUntil([&] { return rig->session->stats().windows_mapped_now == before_mapped; });
  }
}
BENCHMARK(BM_MemoryPerWindow)->Arg(20)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace odyssey::gui

BENCHMARK_MAIN();
