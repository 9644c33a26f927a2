// gui-screenshot DISPLAY FILE.png [--window TITLE-PREFIX]: writes the whole screen of an X
// display as an RGB PNG, or only the first top-level window whose WM_NAME starts with the
// prefix (a gui-daemon frame: "[disp"), for the README's GUI check and for looking at what
// a test saw.
#include <xcb/xcb.h>

#include <cstdio>
#include <string>

#include "tests/gui/gui_test_util.h"

int main(int argc, char** argv) {
  if (argc != 3 && !(argc == 5 && std::string(argv[3]) == "--window")) {
    std::fprintf(stderr, "usage: gui-screenshot DISPLAY FILE.png [--window TITLE-PREFIX]\n");
    return 2;
  }
  odyssey::gui::testing::XProbe probe(argv[1]);
  int x = 0, y = 0, w = 0, h = 0;
  if (!probe.ok() || !probe.Geometry(probe.root(), &w, &h)) {
    std::fprintf(stderr, "gui-screenshot: cannot open display %s\n", argv[1]);
    return 1;
  }
  std::string what = "the screen";
  if (argc == 5) {
    auto found = probe.FindByTitlePrefix(argv[4]);
    if (found.empty() || !probe.RootPosition(found[0], &x, &y) || !probe.Geometry(found[0], &w, &h)) {
      std::fprintf(stderr, "gui-screenshot: no window titled '%s...' on %s\n", argv[4], argv[1]);
      return 1;
    }
    what = "\"" + probe.Property(found[0], "WM_NAME") + "\"";
  }
  if (!probe.SavePng(argv[2], x, y, w, h)) {
    std::fprintf(stderr, "gui-screenshot: cannot write %s\n", argv[2]);
    return 1;
  }
  std::printf("%s: %dx%d of %s on %s\n", argv[2], w, h, what.c_str(), argv[1]);
  return 0;
}
