// Routing: every match kind, every action, drop-in order, syntax errors, shipped defaults,
// content-over-extension, and the odyssey-route binary's explanation.
#include <gtest/gtest.h>

#include "handlers/router.h"
#include "handlers/rules.h"
#include "handlers/url.h"
#include "tests/handlers/test_util.h"

namespace odyssey::handlers {
namespace {

using testing::TempDir;
using testing::WriteText;

RuleSet MustParse(const std::string& text) {
  auto set = RuleSet::Parse(text, "t.rules");
  EXPECT_TRUE(set.ok()) << set.error().message;
  return set.ok() ? set.value() : RuleSet();
}

Url U(const std::string& s) {
  auto u = ParseUrl(s);
  EXPECT_TRUE(u.ok()) << s << ": " << u.error().message;
  return u.ok() ? u.value() : Url{};
}

std::string ParseError(const std::string& text) {
  auto set = RuleSet::Parse(text, "bad.rules");
  EXPECT_FALSE(set.ok()) << text;
  return set.ok() ? "" : set.error().message;
}

TEST(Url, Normalizes) {
  Url u = U("HTTPS://user:pw@WWW.Example.ORG.:8443/docs/./x/../a?q=1#f");
  EXPECT_EQ(u.scheme, "https");
  EXPECT_EQ(u.host, "www.example.org");
  EXPECT_EQ(u.path, "/docs/a");
  Url m = U("mailto:someone@example.org");
  EXPECT_EQ(m.scheme, "mailto");
  EXPECT_EQ(m.host, "");
  EXPECT_EQ(U("ftp://[::1]:21/p").host, "[::1]");
  EXPECT_EQ(RemoveDotSegments("/a/b/../../../c"), "/c");
}

TEST(Url, RefusesMalformed) {
  EXPECT_FALSE(ParseUrl("https://exa mple.org/").ok());
  EXPECT_FALSE(ParseUrl("https:///nohost").ok());
  EXPECT_FALSE(ParseUrl("https://a\x01.org/").ok());
  EXPECT_FALSE(ParseUrl("https://bad..host/").ok());
  EXPECT_FALSE(ParseUrl("/just/a/path").ok());
  EXPECT_FALSE(LooksLikeUrl("C:\\x"));
  EXPECT_TRUE(LooksLikeUrl("https://x"));
}

TEST(Rules, MimeExactGlobAndAny) {
  RuleSet set = MustParse(
      "mime application/pdf convert:pdf\n"
      "mime image/* convert:image\n"
      "mime * deny\n");
  ASSERT_NE(set.MatchMime("application/pdf"), nullptr);
  EXPECT_EQ(set.MatchMime("application/pdf")->action.kind, Action::Kind::kConvertPdf);
  EXPECT_EQ(set.MatchMime("image/png")->action.kind, Action::Kind::kConvertImage);
  EXPECT_EQ(set.MatchMime("image/png")->source.line, 2);
  EXPECT_EQ(set.MatchMime("text/plain")->action.kind, Action::Kind::kDeny);
  EXPECT_EQ(set.MatchMime("text/plain")->source.ToString(), "t.rules:3");
  // MIME rules never match URLs and the reverse.
  EXPECT_EQ(set.MatchUrl(U("https://x.org/")), nullptr);
}

TEST(Rules, UrlSchemeHostGlobAndPathPrefix) {
  RuleSet set = MustParse(
      "url https://*.corp.example.org/wiki vm:work\n"
      "url https://docs.example.org/ dispvm:docs-dvm view-only\n"
      "url mailto: deny\n"
      "url *://localhost local\n"
      "url * dispvm\n");
  auto at = [&](const std::string& u) { return set.MatchUrl(U(u))->source.line; };
  EXPECT_EQ(at("https://intra.corp.example.org/wiki"), 1);
  EXPECT_EQ(at("https://a.b.corp.example.org/wiki/Page"), 1);
  EXPECT_EQ(at("https://intra.corp.example.org/wikiX"), 5) << "prefix matches whole segments";
  EXPECT_EQ(at("https://intra.corp.example.org/wiki/../admin"), 5) << "dot segments removed first";
  EXPECT_EQ(at("http://intra.corp.example.org/wiki"), 5) << "scheme must match";
  EXPECT_EQ(at("https://corp.example.org/wiki"), 5) << "*.x does not match x";
  EXPECT_EQ(at("HTTPS://DOCS.example.org/anything"), 2);
  EXPECT_EQ(at("mailto:a@b.org"), 3);
  EXPECT_EQ(at("http://localhost:8080/x"), 4);
  EXPECT_EQ(at("gopher://x.org/"), 5);
  EXPECT_TRUE(set.MatchUrl(U("https://docs.example.org/a"))->action.view_only);
}

TEST(Rules, EveryActionParsesAndExplains) {
  RuleSet set = MustParse(
      "mime a/a dispvm\nmime a/b dispvm:fedora-41-dvm\nmime a/c vm:work\n"
      "mime a/d convert:pdf\nmime a/e convert:image\nmime a/f local\nmime a/g deny\n"
      "mime a/h vm:work view-only   # trailing comment\n");
  const std::vector<std::string> spelled = {"dispvm", "dispvm:fedora-41-dvm", "vm:work",
                                            "convert:pdf", "convert:image", "local", "deny",
                                            "vm:work"};
  ASSERT_EQ(set.rules().size(), spelled.size());
  for (size_t i = 0; i < spelled.size(); ++i) {
    EXPECT_EQ(set.rules()[i].action.Spelling(), spelled[i]);
    EXPECT_FALSE(set.rules()[i].action.Explain().empty());
  }
  EXPECT_EQ(set.rules()[1].action.ServiceTarget()->name, "fedora-41-dvm");
  EXPECT_EQ(set.rules()[2].action.ServiceTarget()->kind, Target::Kind::kNamed);
  EXPECT_FALSE(set.rules()[5].action.ServiceTarget().has_value());
  EXPECT_TRUE(set.rules()[7].action.view_only);
  EXPECT_EQ(set.rules()[7].text, "mime a/h vm:work view-only");
}

TEST(Rules, SyntaxErrorsNameFileLineAndToken) {
  EXPECT_EQ(ParseError("\n\nfile *.pdf dispvm\n"),
            "bad.rules:3: unknown match kind (expected 'mime' or 'url'): 'file'");
  EXPECT_EQ(ParseError("mime application/pdf openit\n"),
            "bad.rules:1: unknown action (expected dispvm[:TEMPLATE], vm:NAME, convert:pdf, "
            "convert:image, local or deny): 'openit'");
  EXPECT_NE(ParseError("mime pdf dispvm").find("bad.rules:1: invalid MIME pattern"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b vm:").find("'vm:'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b vm:bad/name").find("'vm:bad/name'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b dispvm:-x").find("'-x'"), std::string::npos);
  // The engine's name rule, checked when the rule is read: no upper case, no '.', <= 31.
  EXPECT_NE(ParseError("mime a/b dispvm:Fedora").find("'Fedora'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b vm:work.1").find("'vm:work.1'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b vm:" + std::string(32, 'a')).find("invalid domain name"),
            std::string::npos);
  EXPECT_TRUE(RuleSet::Parse("mime a/b vm:" + std::string(31, 'a') + "\n", "ok.rules").ok());
  EXPECT_NE(ParseError("mime a/b convert:doc").find("'convert:doc'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b deny view-only").find("'deny'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b dispvm loud").find("'loud'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b").find("missing action"), std::string::npos);
  EXPECT_NE(ParseError("url").find("missing pattern"), std::string::npos);
  EXPECT_NE(ParseError("url example.org dispvm").find("'example.org'"), std::string::npos);
  EXPECT_NE(ParseError("url https:/x dispvm").find("'https:/x'"), std::string::npos);
  EXPECT_NE(ParseError("url https://a/b/../c dispvm").find("'/b/../c'"), std::string::npos);
  EXPECT_NE(ParseError("url https://a%b dispvm").find("'a%b'"), std::string::npos);
  EXPECT_NE(ParseError("mime a/b dispvm\x01").find("bad.rules:1: control character"), std::string::npos);
}

TEST(Rules, DropInDirsInOrderFilesInNameOrder) {
  TempDir etc, user;
  WriteText(etc / "20-b.rules", "mime text/plain vm:from-etc-20\n");
  WriteText(etc / "10-a.rules", "# first by name\nmime text/plain vm:from-etc-10\n");
  WriteText(etc / "README", "not a rules file: ignored\n");
  WriteText(user / "00-user.rules", "mime text/plain vm:from-user\nmime text/html deny\n");
  auto set = RuleSet::Load({etc.path(), user.path(), etc / "missing"});
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->MatchMime("text/plain")->action.name, "from-etc-10");
  EXPECT_EQ(set->MatchMime("text/plain")->source.ToString(), etc / "10-a.rules:2");
  EXPECT_EQ(set->MatchMime("text/html")->action.kind, Action::Kind::kDeny);
  // The shipped defaults come last.
  EXPECT_EQ(set->MatchMime("application/pdf")->source.file, kDefaultRulesName);
}

TEST(Rules, BrokenDropInFailsWholeLoad) {
  TempDir d;
  WriteText(d / "10-ok.rules", "mime a/b deny\n");
  WriteText(d / "20-bad.rules", "mime a/b deny\nurl https://x dispvm:\n");
  auto set = RuleSet::Load({d.path()});
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.error().message, d / "20-bad.rules:2: invalid disposable template name: ''");
  TempDir e;
  WriteText(e / "bad name.rules", "");
  EXPECT_FALSE(RuleSet::Load({e.path()}).ok());
}

TEST(Rules, ShippedDefaultsAreSafe) {
  auto set = RuleSet::Parse(DefaultRulesText(), kDefaultRulesName);
  ASSERT_TRUE(set.ok()) << set.error().message;
  for (const auto& r : set->rules()) {
    EXPECT_EQ(r.action.kind, Action::Kind::kDispVm) << r.source.ToString() << ": " << r.text;
  }
  for (const char* m : {"application/pdf", "application/vnd.oasis.opendocument.text", "text/html",
                        "image/png", "application/x-executable", "application/octet-stream"})
    ASSERT_NE(set->MatchMime(m), nullptr) << m;
  for (const char* u : {"https://example.org", "http://x.org/a", "ftp://f.org/", "mailto:a@b",
                        "javascript:alert(1)"})
    ASSERT_NE(set->MatchUrl(U(u)), nullptr) << u;
  // The file in the tree is the one compiled in.
  EXPECT_EQ(testing::ReadText(testing::SourceDir() + "/handlers/handlers.d/50-default.rules"),
            DefaultRulesText());
}

TEST(Router, ContentWinsOverExtension) {
  TempDir d;
  testing::WritePdf(d / "report.png", 1);  // a PDF that claims to be a PNG
  testing::WritePng(d / "photo.png", 16, 8);
  WriteText(d / "notes.txt", "hello\n");
  WriteText(d / "rules.rules",
            "mime application/pdf convert:pdf\nmime image/png convert:image\nmime text/plain local\n");
  auto router = Router::Create({{d.path()}, false});
  ASSERT_TRUE(router.ok()) << router.error().message;
  auto pdf = router.value()->RouteFile(d / "report.png");
  ASSERT_TRUE(pdf.ok()) << pdf.error().message;
  EXPECT_EQ(pdf->mime, "application/pdf");
  EXPECT_EQ(pdf->extension_mime, "image/png");
  EXPECT_EQ(pdf->action.kind, Action::Kind::kConvertPdf);
  ASSERT_EQ(pdf->notes.size(), 1u);
  EXPECT_NE(pdf->notes[0].find("content is application/pdf"), std::string::npos);
  EXPECT_NE(pdf->Explain().find("the content wins"), std::string::npos);
  auto png = router.value()->RouteFile(d / "photo.png");
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(png->action.kind, Action::Kind::kConvertImage);
  EXPECT_TRUE(png->notes.empty());
  auto txt = router.value()->Route("file://" + d.path() + "/notes%2etxt");
  ASSERT_TRUE(txt.ok()) << txt.error().message;
  EXPECT_EQ(txt->action.kind, Action::Kind::kLocal);
  EXPECT_EQ(txt->rule_source, d / "rules.rules:3");
  EXPECT_FALSE(router.value()->RouteFile(d / "missing").ok());
  EXPECT_FALSE(router.value()->RouteFile(d.path()).ok()) << "a directory is not routed";
  // No defaults and no match: still a disposable.
  auto url = router.value()->Route("https://example.org/");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->action.kind, Action::Kind::kDispVm);
  EXPECT_EQ(url->rule_source, "(no rule matched: built-in fallback)");
}

TEST(RouteBinary, PrintsRuleFileLineAndOutcome) {
  TempDir d, home;
  testing::WritePdf(d / "sample.pdf", 2);
  WriteText(d / "10-mine.rules", "url https://*.example.org/private vm:work\n");
  std::string bin = testing::BinaryDir() + "/handlers/odyssey-route";
  std::string env = "env -u XDG_CONFIG_HOME HOME=" + home.path() + " ODYSSEY_HANDLERS_DIRS=" + d.path() + " ";
  std::string out;
  ASSERT_EQ(testing::RunShell(env + bin + " " + d / "sample.pdf" + " https://www.example.org/private/x", &out), 0);
  EXPECT_NE(out.find("type:   application/pdf"), std::string::npos) << out;
  EXPECT_NE(out.find("rule:   50-default.rules (built-in):"), std::string::npos) << out;
  EXPECT_NE(out.find("would:  open in a disposable of the default template"), std::string::npos) << out;
  EXPECT_NE(out.find("rule:   " + d / "10-mine.rules:1: url https://*.example.org/private vm:work"),
            std::string::npos) << out;
  ASSERT_EQ(testing::RunShell(bin + " --rules-dir " + d.path() + " --short https://example.org", &out), 0);
  EXPECT_EQ(out.substr(0, 7), "dispvm\t") << out;
  WriteText(d / "20-broken.rules", "mime application/pdf explode\n");
  EXPECT_EQ(testing::RunShell(env + bin + " https://example.org", &out, true), 2);
  EXPECT_NE(out.find("20-broken.rules:1: unknown action"), std::string::npos) << out;
  EXPECT_NE(out.find("'explode'"), std::string::npos) << out;
  EXPECT_EQ(testing::RunShell(bin + " --help", &out), 0);
  EXPECT_NE(out.find("--rules-dir"), std::string::npos);
}

}  // namespace
}  // namespace odyssey::handlers
