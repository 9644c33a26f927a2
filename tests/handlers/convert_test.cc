// Trusted converters through the LocalRunner: real PDFs and PNGs made here, rendered by the
// real services, rebuilt from pixels; and hostile renderers that lie, truncate, flood or
// claim 100 000 pages. After every failure the original is untouched and nothing is left.
#include <png.h>

#include <gtest/gtest.h>

#include <cstring>

#include "handlers/convert.h"
#include "handlers/pixel_stream.h"
#include "tests/handlers/local_runner.h"
#include "tests/handlers/test_util.h"

namespace odyssey::handlers {
namespace {

using testing::Exists;
using testing::ListDir;
using testing::LocalRunner;
using testing::ReadText;
using testing::TempDir;
using testing::WriteText;

class ConvertTest : public ::testing::Test {
 protected:
  ConvertOptions Options(ConvertOptions::Kind kind = ConvertOptions::Kind::kPdf) {
    ConvertOptions o;
    o.kind = kind;
    o.quarantine_dir = quarantine_.path() + "/q";
    return o;
  }
  // A service dir whose odyssey.RenderPDF is the given shell body (stdin is drained first).
  std::string HostileService(const std::string& body) {
    WriteText(fake_ / "odyssey.RenderPDF", "#!/bin/sh\ncat >/dev/null\n" + body + "\n", 0755);
    return fake_.path();
  }
  void ExpectUntouched(const std::string& original, const std::string& content) {
    EXPECT_EQ(ReadText(original), content);
    EXPECT_EQ(ListDir(work_.path()), std::vector<std::string>{"doc.pdf"});
    EXPECT_FALSE(Exists(quarantine_.path() + "/q"));
  }
  Result<ConvertResult> ConvertHostile(const std::string& body, PixelLimits limits = {}) {
    testing::WritePdf(work_ / "doc.pdf", 1);
    original_ = ReadText(work_ / "doc.pdf");
    LocalRunner runner({HostileService(body)});
    ConvertOptions o = Options();
    o.limits = limits;
    return ConvertFile(runner, work_ / "doc.pdf", o);
  }

  TempDir work_, quarantine_, fake_;
  std::string original_;
};

TEST_F(ConvertTest, RealPdfBecomesPixelOnlyTrustedPdf) {
  testing::WritePdf(work_ / "report.pdf", 3, 300, 200);
  std::string original = ReadText(work_ / "report.pdf");
  LocalRunner runner({testing::ServicesDir()});
  ConvertOptions o = Options();
  std::vector<uint32_t> seen;
  o.on_page = [&](uint32_t index, uint32_t total, const Page& page) {
    EXPECT_EQ(total, 3u);
    EXPECT_EQ(page.width, 417u);   // 300 pt at 100 dpi
    EXPECT_EQ(page.height, 278u);  // 200 pt
    seen.push_back(index);
  };
  auto r = ConvertFile(runner, work_ / "report.pdf", o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(seen, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(r->pages, 3u);
  EXPECT_EQ(r->output_path, work_ / "report.trusted.pdf");
  EXPECT_EQ(ListDir(work_.path()), std::vector<std::string>{"report.trusted.pdf"});
  // The original is in quarantine, byte for byte.
  EXPECT_EQ(r->quarantined_path, quarantine_.path() + "/q/report.pdf");
  EXPECT_EQ(ReadText(r->quarantined_path), original);
  std::string info;
  ASSERT_EQ(testing::RunShell("pdfinfo '" + r->output_path + "'", &info), 0);
  EXPECT_NE(info.find("Pages:           3"), std::string::npos) << info;
  // Pixels only: the rebuilt PDF has no text and no fonts.
  std::string text, fonts;
  testing::RunShell("pdftotext '" + r->output_path + "' - | tr -d '[:space:]\\f'", &text);
  EXPECT_EQ(text, "");
  testing::RunShell("pdffonts '" + r->output_path + "' | tail -n +3", &fonts);
  EXPECT_EQ(fonts, "");
  ASSERT_EQ(testing::RunShell("pdftotext '" + r->quarantined_path + "' -", &text), 0);
  EXPECT_NE(text.find("Odyssey sample page 2"), std::string::npos);
}

TEST_F(ConvertTest, PngBecomesTrustedPngWithTheSamePixels) {
  testing::WritePng(work_ / "photo.png", 40, 30);
  LocalRunner runner({testing::ServicesDir()});
  auto r = ConvertFile(runner, work_ / "photo.png", Options(ConvertOptions::Kind::kImage));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->output_path, work_ / "photo.trusted.png");
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  ASSERT_TRUE(png_image_begin_read_from_file(&img, r->output_path.c_str()));
  img.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> px(PNG_IMAGE_SIZE(img));
  ASSERT_TRUE(png_image_finish_read(&img, nullptr, px.data(), 0, nullptr));
  EXPECT_EQ(img.width, 40u);
  EXPECT_EQ(img.height, 30u);
  EXPECT_EQ(px[0], 0);                                  // x = 0
  EXPECT_EQ(px[(29 * 40 + 39) * 3], 255);               // x = 39
  EXPECT_EQ(px[(29 * 40 + 39) * 3 + 1], 255);           // y = 29
  EXPECT_EQ(px[5 * 3 + 2], 128);
  EXPECT_TRUE(Exists(quarantine_.path() + "/q/photo.png"));
}

TEST_F(ConvertTest, QuarantineNeverReplacesAnEarlierOriginal) {
  LocalRunner runner({testing::ServicesDir()});
  for (int i = 0; i < 2; ++i) {
    testing::WritePng(work_ / "x.png", 4 + i, 4);
    auto r = ConvertFile(runner, work_ / "x.png", Options(ConvertOptions::Kind::kImage));
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(::unlink((work_ / "x.trusted.png").c_str()), 0);
  }
  EXPECT_EQ(ListDir(quarantine_.path() + "/q"), (std::vector<std::string>{"x.png", "x.png.1"}));
}

TEST_F(ConvertTest, ExistingOutputIsNeverReplaced) {
  testing::WritePdf(work_ / "doc.pdf", 1);
  WriteText(work_ / "doc.trusted.pdf", "mine");
  LocalRunner runner({testing::ServicesDir()});
  auto r = ConvertFile(runner, work_ / "doc.pdf", Options());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("already exists"), std::string::npos);
  EXPECT_EQ(ReadText(work_ / "doc.trusted.pdf"), "mine");
}

TEST_F(ConvertTest, MalformedPdfFailsCleanly) {
  WriteText(work_ / "doc.pdf", "%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ngarbage\n%%EOF\n");
  std::string content = ReadText(work_ / "doc.pdf");
  LocalRunner runner({testing::ServicesDir()});
  auto r = ConvertFile(runner, work_ / "doc.pdf", Options());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("odyssey.RenderPDF failed with exit code 1"), std::string::npos)
      << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", content);
}

TEST_F(ConvertTest, HugePageIsRefusedByTheDimensionCap) {
  // A tiny file that asks for a huge raster: 2000 pt at 100 dpi is 2778 pixels a side.
  testing::WritePdf(work_ / "doc.pdf", 1, 2000, 2000);
  std::string content = ReadText(work_ / "doc.pdf");
  LocalRunner runner({testing::ServicesDir()});
  ConvertOptions o = Options();
  o.limits.max_dim = 2000;
  auto r = ConvertFile(runner, work_ / "doc.pdf", o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("page 1/1 width 2778 exceeds the cap of 2000"), std::string::npos)
      << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", content);
}

TEST_F(ConvertTest, HundredThousandPagesRefusedBeforeAnyPixel) {
  auto r = ConvertHostile("printf '100000\\n'; exec cat /dev/zero");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("page count 100000 exceeds the cap of 1000"), std::string::npos)
      << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", original_);
}

TEST_F(ConvertTest, LyingDimensionsAreCaughtByExactByteCounts) {
  // Announces 10x10 (300 bytes) but sends 50 and stops.
  auto r = ConvertHostile("printf '1\\n10 10\\n'; head -c 50 /dev/zero");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("truncated in page 1: 50 of 300 bytes"), std::string::npos)
      << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", original_);
}

TEST_F(ConvertTest, FloodAfterTheLastPageIsRefusedAndTheRendererCutOff) {
  auto r = ConvertHostile("printf '1\\n2 2\\n'; exec cat /dev/zero");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("unexpected byte(s) after the last page"), std::string::npos)
      << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", original_);
}

TEST_F(ConvertTest, TruncatedBetweenPages) {
  auto r = ConvertHostile("printf '3\\n1 1\\nabc1 1\\nabc'");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("truncated: 2 of 3 pages arrived"), std::string::npos)
      << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", original_);
}

TEST_F(ConvertTest, BombOverTotalCapAndGarbageHeaders) {
  PixelLimits tight;
  tight.max_total_bytes = 800;
  auto r = ConvertHostile("printf '5\\n10 10\\n'; head -c 300 /dev/zero; printf '10 10\\n'; "
                          "head -c 300 /dev/zero; printf '10 10\\n'; exec cat /dev/zero",
                          tight);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("page 3/5: the pages so far would need more than the total cap"),
            std::string::npos) << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", original_);
  for (const char* body : {"printf '1\\n-5 10\\n'", "printf '1\\n10x10\\n'", "printf 'two\\n'",
                           "printf '1\\n0 10\\n'", "printf '\\n'", "printf '1\\n1 1 1\\n'",
                           "head -c 100000 /dev/zero", "true", "printf '%s\\n' 123456789012"}) {
    SCOPED_TRACE(body);
    auto bad = ConvertHostile(body);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("rejected the renderer's output"), std::string::npos)
        << bad.error().message;
    ExpectUntouched(work_ / "doc.pdf", original_);
  }
}

TEST_F(ConvertTest, RendererCrashOrMissingServiceIsAClearError) {
  auto r = ConvertHostile("printf '1\\n1 1\\nabc'; kill -SEGV $$");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("exit code 139"), std::string::npos) << r.error().message;
  ExpectUntouched(work_ / "doc.pdf", original_);
  TempDir empty;
  LocalRunner none({empty.path()});
  auto missing = ConvertFile(none, work_ / "doc.pdf", Options());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("exit code 127 (service not found)"), std::string::npos);
}

TEST(PixelStream, ParsesSplitAnywhereAndChecksNumbers) {
  std::string stream = "2\n2 1\nabcdef1 2\nghijkl";
  for (size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    PixelStreamParser p({});
    std::vector<std::string> pages;
    PageSink sink = [&](const Page& page, uint32_t, uint32_t) {
      pages.emplace_back(page.rgb.begin(), page.rgb.end());
      return OkStatus();
    };
    for (size_t i = 0; i < stream.size(); i += chunk)
      ASSERT_TRUE(p.Feed(reinterpret_cast<const uint8_t*>(stream.data()) + i,
                         std::min(chunk, stream.size() - i), sink).ok());
    ASSERT_TRUE(p.Finish().ok());
    EXPECT_EQ(pages, (std::vector<std::string>{"abcdef", "ghijkl"}));
  }
  EXPECT_FALSE(ParseBoundedNumber("007", 100, "n").ok());
  EXPECT_FALSE(ParseBoundedNumber("99999999999", ~0ull, "n").ok());
  EXPECT_EQ(ParseBoundedNumber("42", 100, "n").value(), 42u);
  EXPECT_EQ(TrustedOutputPath("a/b.c.pdf", ConvertOptions::Kind::kPdf), "a/b.c.trusted.pdf");
  EXPECT_EQ(TrustedOutputPath("noext", ConvertOptions::Kind::kImage), "noext.trusted.png");
}

TEST(ConvertBinary, ConvertsThroughTheRunnerCommandWithProgress) {
  TempDir d, home;
  testing::WritePdf(d / "s.pdf", 2);
  std::string runner = testing::BinaryDir() + "/tests/handlers/handlers-local-runner --services " +
                       testing::ServicesDir();
  std::string out;
  int rc = testing::RunShell("HOME=" + home.path() + " XDG_DATA_HOME= " + testing::BinaryDir() +
                                 "/handlers/odyssey-convert --runner '" + runner + "' " + d / "s.pdf",
                             &out, true);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("page 1/2"), std::string::npos) << out;
  EXPECT_NE(out.find("page 2/2"), std::string::npos) << out;
  EXPECT_TRUE(Exists(d / "s.trusted.pdf"));
  EXPECT_TRUE(Exists(home / ".local/share/odyssey/quarantine/s.pdf"));
  ASSERT_EQ(testing::RunShell(testing::BinaryDir() + "/handlers/odyssey-convert --help", &out), 0);
  EXPECT_NE(out.find("--max-pages"), std::string::npos);
}

}  // namespace
}  // namespace odyssey::handlers
