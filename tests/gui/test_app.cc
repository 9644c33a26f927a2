// gui_test_app: a tiny X client for the GUI tests, run on the guest display. Shows one
// window filled with one colour, reports input on stdout ("key N", "button B X Y"), exits
// on WM_DELETE_WINDOW ("closed"), and can own the CLIPBOARD selection.
// Usage: gui_test_app TITLE WIDTH HEIGHT RRGGBB [CLIPBOARD_TEXT]
#include <xcb/xcb.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

xcb_atom_t Atom(xcb_connection_t* c, const char* name) {
  auto* r = xcb_intern_atom_reply(c, xcb_intern_atom(c, 0, static_cast<uint16_t>(strlen(name)), name), nullptr);
  xcb_atom_t a = r ? r->atom : xcb_atom_t{XCB_ATOM_NONE};
  free(r);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s TITLE WIDTH HEIGHT RRGGBB [CLIPBOARD_TEXT]\n", argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string title = argv[1];
  uint16_t width = static_cast<uint16_t>(std::atoi(argv[2]));
  uint16_t height = static_cast<uint16_t>(std::atoi(argv[3]));
  uint32_t color = static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 16));
  std::string clip = argc > 5 ? argv[5] : "";

  xcb_connection_t* c = xcb_connect(nullptr, nullptr);
  if (xcb_connection_has_error(c)) return 1;
  xcb_screen_t* s = xcb_setup_roots_iterator(xcb_get_setup(c)).data;
  xcb_window_t w = xcb_generate_id(c);
  uint32_t values[] = {color, XCB_EVENT_MASK_EXPOSURE | XCB_EVENT_MASK_KEY_PRESS |
                                  XCB_EVENT_MASK_BUTTON_PRESS};
  xcb_create_window(c, XCB_COPY_FROM_PARENT, w, s->root, 40, 30, width, height, 0,
                    XCB_WINDOW_CLASS_INPUT_OUTPUT, s->root_visual,
                    XCB_CW_BACK_PIXEL | XCB_CW_EVENT_MASK, values);
  xcb_change_property(c, XCB_PROP_MODE_REPLACE, w, XCB_ATOM_WM_NAME, XCB_ATOM_STRING, 8,
                      static_cast<uint32_t>(title.size()), title.data());
  const char cls[] = "testapp\0TestApp";
  xcb_change_property(c, XCB_PROP_MODE_REPLACE, w, XCB_ATOM_WM_CLASS, XCB_ATOM_STRING, 8,
                      sizeof(cls), cls);
  xcb_atom_t protocols = Atom(c, "WM_PROTOCOLS"), del = Atom(c, "WM_DELETE_WINDOW");
  xcb_atom_t clipboard = Atom(c, "CLIPBOARD"), utf8 = Atom(c, "UTF8_STRING");
  xcb_change_property(c, XCB_PROP_MODE_REPLACE, w, protocols, XCB_ATOM_ATOM, 32, 1, &del);
  xcb_map_window(c, w);
  if (!clip.empty()) xcb_set_selection_owner(c, w, clipboard, XCB_CURRENT_TIME);
  xcb_flush(c);
  std::printf("ready\n");

  while (xcb_generic_event_t* ev = xcb_wait_for_event(c)) {
    switch (ev->response_type & 0x7f) {
      case XCB_KEY_PRESS: {
        auto* k = reinterpret_cast<xcb_key_press_event_t*>(ev);
        std::printf("key %u\n", k->detail);
        break;
      }
      case XCB_BUTTON_PRESS: {
        auto* b = reinterpret_cast<xcb_button_press_event_t*>(ev);
        std::printf("button %u %d %d\n", b->detail, b->event_x, b->event_y);
        break;
      }
      case XCB_CLIENT_MESSAGE: {
        auto* m = reinterpret_cast<xcb_client_message_event_t*>(ev);
        if (m->type == protocols && m->data.data32[0] == del) {
          std::printf("closed\n");
          free(ev);
          xcb_disconnect(c);
          return 0;
        }
        break;
      }
      case XCB_SELECTION_REQUEST: {
        auto* r = reinterpret_cast<xcb_selection_request_event_t*>(ev);
        xcb_selection_notify_event_t n{};
        n.response_type = XCB_SELECTION_NOTIFY;
        n.time = r->time;
        n.requestor = r->requestor;
        n.selection = r->selection;
        n.target = r->target;
        n.property = XCB_ATOM_NONE;
        if (r->target == utf8 || r->target == XCB_ATOM_STRING) {
          xcb_change_property(c, XCB_PROP_MODE_REPLACE, r->requestor, r->property, r->target, 8,
                              static_cast<uint32_t>(clip.size()), clip.data());
          n.property = r->property;
        }
        xcb_send_event(c, 0, r->requestor, 0, reinterpret_cast<const char*>(&n));
        xcb_flush(c);
        break;
      }
      default:
        break;
    }
    free(ev);
  }
  return 0;
}
