#include "gui/validate.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace odyssey::gui {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Version(uint32_t v = kVersion) {
  Bytes b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes Create(uint32_t window, uint32_t w, uint32_t h, uint32_t override_redirect = 0,
             int32_t x = 10, int32_t y = 20) {
  return Encode(MSG_CREATE, window, MsgCreate{x, y, w, h, 0, override_redirect});
}

Bytes Pixels(uint32_t window, int32_t x, int32_t y, uint32_t w, uint32_t h, size_t extra = 0,
             uint8_t fill = 0x7f) {
  MsgPixels r{x, y, w, h};
  Bytes body(sizeof(r) + size_t{w} * h * 4 + extra, fill);
  std::memcpy(body.data(), &r, sizeof(r));
  return EncodeMessage(MSG_PIXELS, window, body.data(), body.size());
}

// A 2x2 MSG_PIXELS whose length and body lack the last pixel.
Bytes PixelsShort() {
  Bytes body(sizeof(MsgPixels) + 12, 0);
  MsgPixels r{0, 0, 2, 2};
  std::memcpy(body.data(), &r, sizeof(r));
  return EncodeMessage(MSG_PIXELS, 5, body.data(), body.size());
}

Bytes Title(uint32_t window, const std::string& s) {
  MsgWmName n{};
  std::memcpy(n.data, s.data(), std::min(s.size(), sizeof(n.data)));
  return Encode(MSG_WMNAME, window, n);
}

struct FeedResult {
  Status status;
  std::vector<GuestEvent> events;
};

FeedResult Feed(const Bytes& bytes, Limits limits = {}, size_t chunk = 0) {
  FeedResult run;
  GuestStream s(limits, [&](const GuestEvent& ev) {
    // Pixel spans die with the call; keep only the rectangle.
    if (auto* p = std::get_if<EvPixels>(&ev)) {
      run.events.push_back(EvPixels{p->window, p->rect, {}});
    } else {
      run.events.push_back(ev);
    }
  });
  std::span<const uint8_t> rest(bytes);
  while (!rest.empty() && run.status.ok()) {
    size_t n = chunk ? std::min(chunk, rest.size()) : rest.size();
    run.status = s.Feed(rest.first(n));
    rest = rest.subspan(n);
  }
  return run;
}

TEST(GuiVersion, SameMajorTakesSmallerMinor) {
  auto run = Feed(Version((1u << 16) | 4));
  ASSERT_TRUE(run.status.ok());
  ASSERT_EQ(run.events.size(), 1u);
  EXPECT_EQ(std::get<EvVersion>(run.events[0]).negotiated, (1u << 16) | 4);
  run = Feed(Version((1u << 16) | 99));
  EXPECT_EQ(std::get<EvVersion>(run.events[0]).negotiated, kVersion);
}

TEST(GuiVersion, OtherMajorRefused) {
  EXPECT_FALSE(Feed(Version(2u << 16)).status.ok());
  EXPECT_FALSE(Feed(Version(0)).status.ok());
}

TEST(GuiStream, ValidSessionByteByByte) {
  Bytes b = Cat({Version(), Create(5, 100, 50), Encode(MSG_MAP, 5, MsgMapInfo{0, 0}),
                 Title(5, "hello"), Pixels(5, 0, 0, 100, 50), Pixels(5, 99, 49, 1, 1),
                 EncodeMessage(MSG_UNMAP, 5), EncodeMessage(MSG_DESTROY, 5)});
  for (size_t chunk : {size_t{0}, size_t{1}, size_t{7}, size_t{13}}) {
    auto run = Feed(b, {}, chunk);
    ASSERT_TRUE(run.status.ok()) << run.status.error().message;
    ASSERT_EQ(run.events.size(), 8u);
    EXPECT_EQ(std::get<EvCreate>(run.events[1]).rect.width, 100u);
    EXPECT_EQ(std::get<EvTitle>(run.events[3]).title, "hello");
    EXPECT_EQ(std::get<EvPixels>(run.events[5]).rect.x, 99);
    EXPECT_TRUE(std::holds_alternative<EvDestroy>(run.events[7]));
  }
}

struct RefusalCase {
  const char* name;
  Bytes bytes;
};

// Each stream is valid up to its last message, which must be refused.
class GuiRefusal : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(GuiRefusal, IsProtocolError) {
  auto run = Feed(GetParam().bytes);
  EXPECT_FALSE(run.status.ok()) << GetParam().name;
  if (!run.status.ok()) {
    EXPECT_NE(run.status.error().message.find("gui protocol error"), std::string::npos);
  }
}

Bytes Base() { return Cat({Version(), Create(5, 100, 50)}); }

INSTANTIATE_TEST_SUITE_P(
    Table, GuiRefusal,
    ::testing::Values(
        RefusalCase{"unknown_type", Cat({Base(), EncodeMessage(999, 5)})},
        RefusalCase{"host_only_type", Cat({Base(), EncodeMessage(MSG_KEYPRESS, 5, "xxxxxxxxxxxxxxxxxxxx", 20)})},
        RefusalCase{"type_135", Cat({Base(), EncodeMessage(135, 5)})},
        RefusalCase{"create_short", Cat({Version(), EncodeMessage(MSG_CREATE, 5, "abc", 3)})},
        RefusalCase{"create_long", Cat({Version(), EncodeMessage(MSG_CREATE, 5, Bytes(25).data(), 25)})},
        RefusalCase{"create_twice", Cat({Base(), Create(5, 10, 10)})},
        RefusalCase{"create_window_0", Cat({Version(), Create(0, 10, 10)})},
        RefusalCase{"create_too_wide", Cat({Version(), Create(5, kMaxWindowWidth + 1, 10)})},
        RefusalCase{"create_too_tall", Cat({Version(), Create(5, 10, kMaxWindowHeight + 1)})},
        RefusalCase{"create_zero_size", Cat({Version(), Create(5, 0, 10)})},
        RefusalCase{"create_negative_size", Cat({Version(), Create(5, 0xffffffffu, 10)})},
        RefusalCase{"destroy_with_body", Cat({Base(), EncodeMessage(MSG_DESTROY, 5, "x", 1)})},
        RefusalCase{"map_unknown_window", Cat({Base(), Encode(MSG_MAP, 6, MsgMapInfo{0, 0})})},
        RefusalCase{"unmap_unknown_window", Cat({Base(), EncodeMessage(MSG_UNMAP, 7)})},
        RefusalCase{"after_destroy", Cat({Base(), EncodeMessage(MSG_DESTROY, 5), EncodeMessage(MSG_UNMAP, 5)})},
        RefusalCase{"configure_too_big", Cat({Base(), Encode(MSG_CONFIGURE, 5, MsgConfigure{0, 0, 20000, 10, 0})})},
        RefusalCase{"title_short", Cat({Base(), EncodeMessage(MSG_WMNAME, 5, "abc", 3)})},
        RefusalCase{"pixels_outside", Cat({Base(), Pixels(5, 90, 0, 11, 1)})},
        RefusalCase{"pixels_negative_x", Cat({Base(), Pixels(5, -1, 0, 2, 1)})},
        RefusalCase{"pixels_below", Cat({Base(), Pixels(5, 0, 50, 1, 1)})},
        RefusalCase{"pixels_extra_byte", Cat({Base(), Pixels(5, 0, 0, 2, 2, 1)})},
        RefusalCase{"pixels_short", Cat({Base(), PixelsShort()})},
        RefusalCase{"pixels_huge_len", Cat({Base(), [] {
                                             MsgHeader h{MSG_PIXELS, 5, 0xffffffffu};
                                             Bytes b(sizeof(h));
                                             std::memcpy(b.data(), &h, sizeof(h));
                                             return b;
                                           }()})},
        RefusalCase{"shmimage_outside", Cat({Base(), Encode(MSG_SHMIMAGE, 5, MsgShmImage{0, 0, 101, 1})})},
        RefusalCase{"clipboard_too_long", Cat({Base(), EncodeMessage(MSG_CLIPBOARD_DATA, 0, Bytes(kClipboardDefaultMax + 1).data(), kClipboardDefaultMax + 1)})},
        RefusalCase{"window_dump_wrong_size", Cat({Base(), Encode(MSG_WINDOW_DUMP, 5, MsgWindowDumpHdr{0, 100, 50, 32})})}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(GuiStream, DeadStreamStaysDead) {
  FeedResult run;
  GuestStream s({}, [&](const GuestEvent& ev) { run.events.push_back(ev); });
  EXPECT_FALSE(s.Feed(Cat({Version(), EncodeMessage(999, 0)})).ok());
  EXPECT_TRUE(s.dead());
  EXPECT_FALSE(s.Feed(Create(1, 10, 10)).ok());
  EXPECT_EQ(run.events.size(), 1u);  // only the version
}

TEST(GuiStream, WindowCap) {
  Bytes b = Version();
  for (uint32_t i = 1; i <= kMaxWindows; ++i) b = Cat({b, Create(i, 1, 1)});
  EXPECT_TRUE(Feed(b).status.ok());
  EXPECT_FALSE(Feed(Cat({b, Create(kMaxWindows + 1, 1, 1)})).status.ok());
  // A destroyed id frees its slot.
  EXPECT_TRUE(Feed(Cat({b, EncodeMessage(MSG_DESTROY, 3), Create(kMaxWindows + 1, 1, 1)})).status.ok());
}

TEST(GuiStream, PixelsCappedPerMessage) {
  // 1024x1025 pixels = just over 4 MiB: refused from the header alone.
  Bytes b = Cat({Version(), Create(5, 2048, 2048)});
  MsgHeader h{MSG_PIXELS, 5, static_cast<uint32_t>(sizeof(MsgPixels) + 1024 * 1025 * 4)};
  Bytes hb(sizeof(h));
  std::memcpy(hb.data(), &h, sizeof(h));
  EXPECT_FALSE(Feed(Cat({b, hb})).status.ok());
  EXPECT_TRUE(Feed(Cat({b, Pixels(5, 0, 0, 1024, 1024)})).status.ok());
}

TEST(GuiStream, OverrideRedirectOver90PercentDemoted) {
  Limits l;
  l.screen_width = 1000;
  l.screen_height = 1000;
  auto run = Feed(Cat({Version(), Create(5, 1000, 950, 1), Create(6, 900, 1000, 1)}), l);
  ASSERT_TRUE(run.status.ok());
  EXPECT_FALSE(std::get<EvCreate>(run.events[1]).override_redirect);
  EXPECT_TRUE(std::get<EvCreate>(run.events[2]).override_redirect);
}

TEST(GuiStream, PositionsClamped) {
  auto run = Feed(Cat({Version(), Create(5, 10, 10, 0, INT32_MIN, INT32_MAX)}));
  ASSERT_TRUE(run.status.ok());
  auto c = std::get<EvCreate>(run.events[1]);
  EXPECT_EQ(c.rect.x, -static_cast<int32_t>(kMaxWindowWidth));
  EXPECT_EQ(c.rect.y, static_cast<int32_t>(kMaxWindowHeight));
}

TEST(GuiStream, ClipboardAndFlagsSanitized) {
  auto run = Feed(Cat({Base(), EncodeMessage(MSG_CLIPBOARD_DATA, 1234, "abc", 3),
                       Encode(MSG_WINDOW_FLAGS, 5, MsgWindowFlags{0xffffffffu, 0x10u}),
                       Encode(MSG_CURSOR, 5, MsgCursor{0xdeadbeef}),
                       Encode(MSG_CURSOR, 5, MsgCursor{kCursorX11 | 68})}));
  ASSERT_TRUE(run.status.ok());
  EXPECT_EQ(std::get<EvClipboard>(run.events[2]).data, "abc");
  EXPECT_EQ(std::get<EvFlags>(run.events[3]).flags_set, kWindowFlagsKnown);
  EXPECT_EQ(std::get<EvFlags>(run.events[3]).flags_unset, 0u);
  EXPECT_EQ(std::get<EvCursor>(run.events[4]).cursor, kCursorDefault);
  EXPECT_EQ(std::get<EvCursor>(run.events[5]).cursor, kCursorX11 | 68);
}

struct TitleCase {
  std::string in;
  bool utf8;
  std::string out;
};

class GuiTitle : public ::testing::TestWithParam<TitleCase> {};

TEST_P(GuiTitle, Sanitized) {
  const auto& c = GetParam();
  EXPECT_EQ(SanitizeTitle(std::span<const char>(c.in.data(), c.in.size()), c.utf8), c.out);
}

INSTANTIATE_TEST_SUITE_P(
    Table, GuiTitle,
    ::testing::Values(TitleCase{"plain Title 1", false, "plain Title 1"},
                      TitleCase{"tab\there", false, "tab_here"},
                      TitleCase{"esc\x1b[31mred", false, "esc_[31mred"},
                      TitleCase{"del\x7f", false, "del_"},
                      TitleCase{std::string("nul\0after", 9), false, "nul"},
                      TitleCase{"caf\xc3\xa9", false, "caf__"},
                      TitleCase{"caf\xc3\xa9", true, "caf\xc3\xa9"},
                      TitleCase{"over\xc0\xaflong", true, "over__long"},
                      TitleCase{"sur\xed\xa0\x80", true, "sur___"},
                      TitleCase{"c1\xc2\x85", true, "c1__"},
                      TitleCase{"bidi\xe2\x80\xae", true, "bidi___"},
                      TitleCase{"cut\xe2\x82", true, "cut__"},
                      TitleCase{std::string(300, 'a'), false, std::string(127, 'a')}));

TEST(GuiTitle, FullBufferWithoutNul) {
  auto run = Feed(Cat({Base(), Title(5, std::string(128, '\xff'))}));
  ASSERT_TRUE(run.status.ok());
  EXPECT_EQ(std::get<EvTitle>(run.events[2]).title, std::string(127, '_'));
}

TEST(GuiClass, Sanitized) {
  std::string in = "Foo Bar:baz\x01";
  EXPECT_EQ(SanitizeClass(std::span<const char>(in.data(), in.size())), "Foo_Bar_baz_");
}

}  // namespace
}  // namespace odyssey::gui
