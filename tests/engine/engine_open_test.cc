// `odyssey open`, `route`, `convert` and `call` end to end: a real odysseyd on the default
// backend (hal/native as root: namespaces, frozen clones, the real qrexec-agent), the real
// handlers routing rules (libmagic on real generated files), the real services under
// handlers/services, and the real qrexec policy library deciding every call. Skipped when
// not root (hal/native needs it).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/engine/engine_test_util.h"
#include "tests/handlers/test_util.h"

namespace odyssey::engine::testing {
namespace {

namespace ht = odyssey::handlers::testing;

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void Write(const std::string& path, const std::string& text, mode_t mode = 0644) {
  { std::ofstream(path, std::ios::binary) << text; }
  ::chmod(path.c_str(), mode);
}

// Width and height from a PNG's IHDR.
std::pair<uint32_t, uint32_t> PngSize(const std::string& png) {
  if (png.size() < 24 || png.compare(1, 3, "PNG") != 0) return {0, 0};
  auto be32 = [&](size_t o) {
    return (uint32_t(uint8_t(png[o])) << 24) | (uint32_t(uint8_t(png[o + 1])) << 16) |
           (uint32_t(uint8_t(png[o + 2])) << 8) | uint32_t(uint8_t(png[o + 3]));
  };
  return {be32(16), be32(20)};
}

class EngineOpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "hal/native needs root";
    work_ = MakeTempDir("open-work");
    ::chmod(work_.c_str(), 0711);
    std::filesystem::create_directories(work_ + "/rules");
    std::filesystem::create_directories(work_ + "/policy");
    // The engine's shipped policy, plus a test service that exits with its argument.
    std::filesystem::copy_file(std::string(ODYSSEY_ENGINE_DATA_DIR) + "/policy.d/50-odyssey-engine.policy",
                               work_ + "/policy/50-odyssey-engine.policy");
    Write(work_ + "/policy/40-test.policy", "test.Exit * @adminvm @anyvm allow\n");
  }
  void TearDown() override {
    if (!work_.empty()) std::filesystem::remove_all(work_);
  }
  // A daemon on the default backend whose services are handlers/services, after
  // `extra_services` when given.
  std::unique_ptr<TestDaemon> Daemon(const std::string& extra_services = "") {
    std::string services = std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services";
    if (!extra_services.empty()) {
      // hal/native binds only the first directory of the service path into its domains:
      // the extra one gets the real services it does not replace.
      for (auto& e : std::filesystem::directory_iterator(std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services"))
        if (!std::filesystem::exists(extra_services + "/" + e.path().filename().string()))
          std::filesystem::copy_file(e.path(), extra_services + "/" + e.path().filename().string());
      services = extra_services + ":" + services;
    }
    auto d = std::make_unique<TestDaemon>(Conf{{"backend", "auto"}, {"pool_size", "1"},
                                               {"policy_dir", work_ + "/policy"},
                                               {"service_path", services}});
    ::chmod(d->dir().c_str(), 0711);
    return d;
  }
  // The CLI against d, with rules only from work_/rules (plus the shipped defaults) and a
  // private XDG_DATA_HOME (quarantine).
  CliResult Cli(TestDaemon& d, std::vector<std::string> args, const std::string& stdin_data = "") {
    args.insert(args.begin(), {ODYSSEY_CLI_PATH, "--no-autostart", "--socket", d.socket()});
    return RunProgram(args, stdin_data,
                      {"ODYSSEY_HANDLERS_DIRS=" + work_ + "/rules", "XDG_DATA_HOME=" + work_ + "/data"});
  }
  int Running(TestDaemon& d) {
    auto ls = d.Client().Request({{"op", "ls"}});
    int n = 0;
    if (ls.ok())
      for (auto& x : (*ls)["domains"]) n += x.value("state", "") == "running";
    return n;
  }

  std::string work_;
};

TEST_F(EngineOpenTest, CallStreamsAndPropagatesTheExitCode) {
  std::string svc = work_ + "/svc";
  std::filesystem::create_directories(svc);
  Write(svc + "/test.Exit", "#!/bin/sh\ncat\necho \"arg=$1\" >&2\nexit \"${1:-3}\"\n", 0755);
  ::chmod(svc.c_str(), 0755);
  auto d = Daemon(svc);
  ASSERT_TRUE(d->Start()) << d->Log();
  auto r = Cli(*d, {"call", "test.Exit+42"}, "hello through qrexec\n");
  EXPECT_EQ(r.exit_code, 42) << r.err << d->Log();
  EXPECT_EQ(r.out, "hello through qrexec\n");
  EXPECT_NE(r.err.find("arg=42"), std::string::npos) << r.err;
  r = Cli(*d, {"call", "--dispvm=host", "test.Exit+7"});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  r = Cli(*d, {"call", "--dispvm", "test.Exit+0"}, "x");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "x");
  // The real qubes.OpenURL: refuses a javascript: URL with exit 1.
  r = Cli(*d, {"call", "qubes.OpenURL"}, "javascript:alert(1)\n");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("Invalid URL"), std::string::npos) << r.err;
  // Not in the policy: refused (126), naming the deciding rule or that none matched.
  r = Cli(*d, {"call", "qubes.Filecopy"});
  EXPECT_EQ(r.exit_code, 126) << r.err;
  EXPECT_NE(r.err.find("call denied by policy"), std::string::npos) << r.err;
  Write(work_ + "/policy/10-deny.policy", "test.Exit +9 @adminvm @anyvm deny\n");
  r = Cli(*d, {"call", "test.Exit+9"});
  EXPECT_EQ(r.exit_code, 126) << r.err;
  EXPECT_NE(r.err.find(work_ + "/policy/10-deny.policy:1"), std::string::npos) << r.err;
  r = Cli(*d, {"call", "--vm=work", "test.Exit+1"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("disposables only"), std::string::npos) << r.err;
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, OpenRoutesPdfAndUrlIntoDisposables) {
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  // A real PDF whose name lies about its type: the content decides.
  std::string pdf = work_ + "/paper.txt";
  ht::WritePdf(pdf, 2);
  std::string before = Slurp(pdf);
  auto r = Cli(*d, {"open", pdf});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_NE(r.err.find("-> dispvm (rule 50-default.rules (built-in):"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("content is application/pdf"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("qubes.OpenInVM: received paper.txt (" + std::to_string(before.size()) + " bytes)"),
            std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Pages:"), std::string::npos) << r.err;  // pdfinfo ran in the disposable
  EXPECT_EQ(Slurp(pdf), before);
  r = Cli(*d, {"open", "--view-only", pdf});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("received paper.txt"), std::string::npos) << r.err;

  r = Cli(*d, {"open", "https://example.org/from-odyssey-open"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("https://example.org/from-odyssey-open -> dispvm (rule 50-default.rules"),
            std::string::npos) << r.err;
  EXPECT_NE(r.out.find("qubes.OpenURL in disp"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("would open https://example.org/from-odyssey-open"), std::string::npos) << r.out;
  r = Cli(*d, {"open", "javascript://alert(1)"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Invalid URL"), std::string::npos) << r.err;
  r = Cli(*d, {"open", work_ + "/missing.pdf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot open " + work_ + "/missing.pdf"), std::string::npos) << r.err;
  // --dispvm skips the rules; a template that does not exist is the daemon's error.
  r = Cli(*d, {"open", "--dispvm", "nosuch", pdf});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, DenyRuleAndRouteNameTheRuleFileLine) {
  std::string rules = work_ + "/rules/10-local.rules";
  Write(rules, "# test rules\nmime application/pdf deny\nurl https://*.evil.example deny\n"
               "url https://docs.example.org/private dispvm:host view-only\n"
               "mime image/png convert:image\n");
  std::string pdf = work_ + "/report.pdf";
  ht::WritePdf(pdf, 1);
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  auto r = Cli(*d, {"open", pdf});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("refused: " + pdf + " (rule " + rules + ":2: mime application/pdf deny)"),
            std::string::npos) << r.err;
  r = Cli(*d, {"open", "https://www.evil.example/x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("(rule " + rules + ":3"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(pdf));

  r = Cli(*d, {"route", pdf, "https://docs.example.org/private/a", "https://example.org/"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("type:   application/pdf (from content)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule:   " + rules + ":2: mime application/pdf deny"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule:   " + rules + ":4: url https://docs.example.org/private dispvm:host view-only"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("action: dispvm:host"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule:   50-default.rules (built-in):"), std::string::npos) << r.out;
  r = Cli(*d, {"route", "--short", pdf});
  EXPECT_EQ(r.out, "deny\t" + rules + ":2\n");
  r = Cli(*d, {"route", "--list"});
  EXPECT_EQ(r.out.rfind(rules + ":2\tmime application/pdf deny\n", 0), 0u) << r.out;
  // A syntax error names file:line and the token; nothing is opened.
  Write(work_ + "/rules/20-bad.rules", "mime text/plain sideways\n");
  r = Cli(*d, {"route", pdf});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("20-bad.rules:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sideways"), std::string::npos) << r.err;
  r = Cli(*d, {"open", "https://example.org/"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("20-bad.rules:1"), std::string::npos) << r.err;
}

TEST_F(EngineOpenTest, ConvertPdfAndPngThroughEngineDisposables) {
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  std::string pdf = work_ + "/doc.pdf";
  ht::WritePdf(pdf, 3, 300, 200);
  std::string original = Slurp(pdf);
  auto r = Cli(*d, {"convert", pdf});
  ASSERT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_EQ(r.out, work_ + "/doc.trusted.pdf\n");
  EXPECT_NE(r.err.find("page 3/3 (417x278)"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(pdf));
  EXPECT_EQ(Slurp(work_ + "/data/odyssey/quarantine/doc.pdf"), original);
  std::string info;
  ASSERT_EQ(ht::RunShell("pdfinfo '" + work_ + "/doc.trusted.pdf'", &info), 0);
  std::string pages_line = info.substr(info.find("Pages:"), info.find('\n', info.find("Pages:")) - info.find("Pages:"));
  EXPECT_EQ(pages_line.substr(pages_line.find_last_of(' ') + 1), "3") << info;

  std::string png = work_ + "/picture.png";
  ht::WritePng(png, 64, 48);
  r = Cli(*d, {"convert", png});  // an image by content: a trusted PNG
  ASSERT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_EQ(r.out, work_ + "/picture.trusted.png\n");
  EXPECT_EQ(PngSize(Slurp(work_ + "/picture.trusted.png")), (std::pair<uint32_t, uint32_t>{64, 48}));
  EXPECT_TRUE(std::filesystem::exists(work_ + "/data/odyssey/quarantine/picture.png"));

  // A convert:pdf rule makes `odyssey open` convert.
  Write(work_ + "/rules/10.rules", "mime application/pdf convert:pdf\n");
  ht::WritePdf(work_ + "/second.pdf", 1);
  r = Cli(*d, {"open", work_ + "/second.pdf"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(work_ + "/second.trusted.pdf"));
  EXPECT_TRUE(std::filesystem::exists(work_ + "/data/odyssey/quarantine/second.pdf"));

  // handlers' ExecRunner (odyssey-convert's default) through the real `odyssey call`.
  ht::WritePdf(work_ + "/third.pdf", 2);
  std::string runner = std::string(ODYSSEY_CLI_PATH) + " --no-autostart --socket " + d->socket() + " call";
  auto c = RunProgram({ODYSSEY_CONVERT_PATH, "--runner", runner, "--quarantine", work_ + "/q",
                       work_ + "/third.pdf"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.out, work_ + "/third.trusted.pdf\n");
  EXPECT_TRUE(std::filesystem::exists(work_ + "/q/third.pdf"));
  EXPECT_EQ(Running(*d), 0);
}

TEST_F(EngineOpenTest, HostileRendererIsAClearErrorAndChangesNothing) {
  std::string svc = work_ + "/hostile";
  std::filesystem::create_directories(svc);
  ::chmod(svc.c_str(), 0755);
  // Claims one 4x4 page but sends the pixels of a 4x2 one, then stops: lying dimensions.
  Write(svc + "/odyssey.RenderPDF",
        "#!/bin/sh\ncat >/dev/null\nprintf '1\\n4 4\\n'\nhead -c 24 /dev/zero\n", 0755);
  // Claims a page far beyond the caps, then streams forever: the host must hang up and the
  // engine must abandon the call rather than drain the stream for ever.
  Write(svc + "/odyssey.RenderImage",
        "#!/bin/sh\ncat >/dev/null\nprintf '1\\n4000000000 4000000000\\n'\nexec cat /dev/zero\n", 0755);
  auto d = Daemon(svc);
  ASSERT_TRUE(d->Start()) << d->Log();
  std::string pdf = work_ + "/doc.pdf";
  ht::WritePdf(pdf, 1);
  std::string original = Slurp(pdf);
  auto r = Cli(*d, {"convert", pdf});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("odyssey convert: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("page 1"), std::string::npos) << r.err;
  EXPECT_EQ(Slurp(pdf), original);
  EXPECT_FALSE(std::filesystem::exists(work_ + "/doc.trusted.pdf"));
  EXPECT_FALSE(std::filesystem::exists(work_ + "/data/odyssey/quarantine"));

  std::string png = work_ + "/img.png";
  ht::WritePng(png, 8, 8);
  r = Cli(*d, {"convert", png});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("4000000000"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(png));
  EXPECT_FALSE(std::filesystem::exists(work_ + "/img.trusted.png"));
  // The daemon is unaffected and every disposable is gone.
  EXPECT_EQ(Cli(*d, {"ping"}).exit_code, 0);
  EXPECT_EQ(Running(*d), 0);
}

}  // namespace
}  // namespace odyssey::engine::testing
