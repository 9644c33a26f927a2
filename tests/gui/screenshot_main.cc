// gui-screenshot DISPLAY FILE.png: writes the whole screen of an X display as an RGB PNG
// (for the README's GUI check and for looking at what a test saw).
#include <xcb/xcb.h>

#include <cstdio>
#include <string>

#include "tests/gui/gui_test_util.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gui-screenshot DISPLAY FILE.png\n");
    return 2;
  }
  odyssey::gui::testing::XProbe probe(argv[1]);
  int w = 0, h = 0;
  if (!probe.ok() || !probe.Geometry(probe.root(), &w, &h)) {
    std::fprintf(stderr, "gui-screenshot: cannot open display %s\n", argv[1]);
    return 1;
  }
  if (!probe.SavePng(argv[2], 0, 0, w, h)) {
    std::fprintf(stderr, "gui-screenshot: cannot write %s\n", argv[2]);
    return 1;
  }
  std::printf("%s: %dx%d of %s\n", argv[2], w, h, argv[1]);
  return 0;
}
